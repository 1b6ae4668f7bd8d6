package topcmd

import (
	"bufio"
	"context"
	"fmt"
	"os"

	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
)

// maxLine bounds one event of a file (bodies are at most 64 KiB each,
// base64 in JSON).
const maxLine = 1 << 20

// fileTapper replays a saved tap session: newline-delimited protojson
// TapEvents, as the tap API streams them. The request's target and match
// are not applied: the file holds what was tapped.
type fileTapper struct{ path string }

var _ model.Tapper = fileTapper{}

func (f fileTapper) Tap(ctx context.Context, _ model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("tap file: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if len(sc.Bytes()) == 0 {
			continue
		}
		ev := &apiv1.TapEvent{}
		if err := protojson.Unmarshal(sc.Bytes(), ev); err != nil {
			return fmt.Errorf("%s line %d: %w", f.path, n, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", f.path, err)
	}
	return nil
}
