package meshh2

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestReservationGivenBack: a stream slot reserved for a RoundTrip that
// returns before opening its stream (its context already done, its body
// failing) is given back; leaked, the slots would fill the conn for good.
func TestReservationGivenBack(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	cc := leanPair(t, h, ServerOptions{MaxConcurrentStreams: 2}, nil)
	get := func(ctx context.Context, body io.Reader) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://mesh.test/", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = -1
		res, err := cc.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
		return err
	}
	// The server's SETTINGS (2 streams at most) are in once a request
	// has been answered.
	if err := get(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 5 {
		if !cc.ReserveNewRequest() {
			t.Fatalf("round %d: no slot to reserve: earlier reservations leaked", i)
		}
		var err error
		if i%2 == 0 {
			err = get(cancelled, nil)
		} else {
			err = get(context.Background(), failingBuffered{strings.NewReader("")})
		}
		if err == nil {
			t.Fatalf("round %d: the round trip did not fail", i)
		}
	}
	if err := get(context.Background(), nil); err != nil {
		t.Fatalf("after the failed round trips: %v", err)
	}
}

// failingBuffered says all of it is there, then fails its read.
type failingBuffered struct{ *strings.Reader }

func (failingBuffered) Buffered() (int, bool)    { return 4, true }
func (failingBuffered) Read([]byte) (int, error) { return 0, io.ErrClosedPipe }

func (failingBuffered) Close() error { return nil }
