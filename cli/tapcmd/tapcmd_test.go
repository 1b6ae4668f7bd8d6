package tapcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/tapexport"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ns   string
		want model.Resource
		err  string
	}{
		{[]string{"deploy/web"}, "demo", model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}, ""},
		{[]string{"pod", "web-1"}, "", model.Resource{Kind: "pods", Namespace: "default", Name: "web-1"}, ""},
		{[]string{"ns/demo"}, "", model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, ""},
		{[]string{"namespace"}, "demo", model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, ""},
		{[]string{"STS/db"}, "x", model.Resource{Kind: "statefulsets", Namespace: "x", Name: "db"}, ""},
		{[]string{"svc/web"}, "demo", model.Resource{}, "cannot be tapped"},
		{[]string{"deploy"}, "demo", model.Resource{}, "a name is needed"},
		{[]string{"ns/a"}, "b", model.Resource{}, "name one namespace"},
		{[]string{"deploy/web", "x"}, "", model.Resource{}, "want RESOURCE/NAME"},
	} {
		got, err := ParseTarget(tc.args, tc.ns)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("ParseTarget(%v, %q) = %+v, %v; want %+v, %q", tc.args, tc.ns, got, err, tc.want, tc.err)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o   options
		err string
	}{
		{options{path: "/books", captureBodies: 10, sample: 0.5}, ""},
		{options{sample: 1.5}, "--sample"},
		{options{captureBodies: 70000}, "--capture-bodies"},
		{options{maxRPS: 2000}, "--max-rps"},
		{options{dir: "sideways"}, "--direction"},
		{options{export: "pcap", file: "x"}, "--export"},
		{options{export: "har"}, "needs --file"},
		{options{file: "x"}, "--file needs"},
	} {
		req, err := tc.o.request()
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: %v; want %q", tc.o, err, tc.err)
		}
		if err == nil && (req.GetMatch().GetPathPrefix() != tc.o.path || req.GetBodyBytes() != tc.o.captureBodies) {
			t.Errorf("request %v", req)
		}
	}
}

// replay is a Tapper of recorded events (the run loop's logic only; the
// real client is viz/k8stap, the real server the e2e suite's).
type replay []*apiv1.TapEvent

func (r replay) Tap(_ context.Context, _ model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	for _, ev := range r {
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func TestRunExports(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC))
	evs := replay{
		{Id: 1, Pod: "web-1", Namespace: "demo", Tls: true, Time: at, SourceIdentity: "spiffe://cluster.local/ns/demo/sa/loadgen",
			Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: "GET", Authority: "web:7000", Path: "/"}}},
		{Id: 1, Pod: "web-1", Namespace: "demo", Time: at, Event: &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: 200, SinceRequestInit: durationpb.New(time.Millisecond)}}},
		{Id: 1, Pod: "web-1", Namespace: "demo", Time: at, Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{GrpcStatus: -1, ResponseBytes: 5, ResponseBody: []byte("hello")}}},
		// Cut before its end: exported as far as seen.
		{Id: 2, Pod: "web-1", Namespace: "demo", Time: at, Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: "POST", Path: "/x"}}},
	}
	dir := t.TempDir()
	for _, format := range []string{"text", "wide", "json", "yaml"} {
		var out, errw bytes.Buffer
		file := filepath.Join(dir, format+".har")
		if err := run(t.Context(), &out, &errw, evs, model.TapRequest{}, format, options{export: "har", file: file}); err != nil {
			t.Fatal(err)
		}
		lines := strings.Count(out.String(), "\n")
		switch format {
		case "text", "wide", "json":
			if lines != len(evs) {
				t.Errorf("%s: %d lines for %d events:\n%s", format, lines, len(evs), out.String())
			}
		case "yaml":
			if strings.Count(out.String(), "---\n") != len(evs) {
				t.Errorf("yaml: %s", out.String())
			}
		}
		if format == "wide" && !strings.Contains(out.String(), "src-id=spiffe://cluster.local/ns/demo/sa/loadgen") {
			t.Errorf("wide lacks identities:\n%s", out.String())
		}
		data, _ := os.ReadFile(file)
		var har tapexport.HAR
		if err := json.Unmarshal(data, &har); err != nil || len(har.Log.Entries) != 2 || har.Log.Entries[0].Response.Content.Text != "hello" {
			t.Errorf("HAR: %v %+v", err, har.Log.Entries)
		}
	}
	file := filepath.Join(dir, "s.pcapng")
	if err := run(t.Context(), &bytes.Buffer{}, &bytes.Buffer{}, evs, model.TapRequest{}, "text", options{export: "pcapng", file: file}); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(file); len(data) < 100 || !bytes.HasPrefix(data, []byte{0x0a, 0x0d, 0x0d, 0x0a}) {
		t.Errorf("pcapng file of %d bytes", len(data))
	}
}

// TestExportIsPrivate: an export may hold captured bodies, so it is 0600
// whether it is new or replaces a wider file.
func TestExportIsPrivate(t *testing.T) {
	evs := replay{{Id: 1, Pod: "web-1", Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{ResponseBody: []byte("secret")}}}}
	for _, tc := range []struct {
		name     string
		existing os.FileMode // 0: no file yet
	}{
		{"new har", 0},
		{"new pcapng", 0},
		{"replacing a 0644 file", 0o644},
		{"replacing a 0666 file", 0o666},
	} {
		t.Run(tc.name, func(t *testing.T) {
			format := "har"
			if strings.Contains(tc.name, "pcapng") {
				format = "pcapng"
			}
			file := filepath.Join(t.TempDir(), "export")
			if tc.existing != 0 {
				if err := os.WriteFile(file, []byte("old"), tc.existing); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(file, tc.existing); err != nil {
					t.Fatal(err)
				}
			}
			if err := run(t.Context(), &bytes.Buffer{}, &bytes.Buffer{}, evs, model.TapRequest{}, "text", options{export: format, file: file}); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if perm := st.Mode().Perm(); perm != 0o600 {
				t.Errorf("%s written with mode %04o, want 0600", file, perm)
			}
			if st.Size() <= 3 {
				t.Errorf("%s not rewritten (%d bytes)", file, st.Size())
			}
		})
	}
}

func TestExportBufMaxima(t *testing.T) {
	body := func(n int) *tapexport.Exchange { return &tapexport.Exchange{ResponseBody: make([]byte, n)} }
	for _, tc := range []struct {
		name          string
		maxN, maxBody int
		xs            []*tapexport.Exchange
		kept, left    int
	}{
		{"under both", 3, 100, []*tapexport.Exchange{body(10), body(10)}, 2, 0},
		{"count reached", 2, 100, []*tapexport.Exchange{body(0), body(0), body(0), body(0)}, 2, 2},
		{"bodies reached", 10, 100, []*tapexport.Exchange{body(60), body(40), body(1)}, 2, 1},
		// The first ones are kept: a later small one is not let in after a
		// big one was left out (the file is the session's beginning).
		{"no gap after a refusal", 10, 100, []*tapexport.Exchange{body(90), body(20), body(5)}, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := exportBuf{maxN: tc.maxN, maxBody: tc.maxBody}
			for _, x := range tc.xs {
				b.add(x)
			}
			if len(b.xs) != tc.kept || b.left != tc.left {
				t.Errorf("kept %d, left out %d; want %d, %d", len(b.xs), b.left, tc.kept, tc.left)
			}
		})
	}
}

// TestRunExportBounded: a tap without --limit keeps at most MaxExport
// requests for its export, and says how many it left out.
func TestRunExportBounded(t *testing.T) {
	const extra, pending = 5, 3
	var evs replay
	for id := range uint64(MaxExport + extra) {
		evs = append(evs, &apiv1.TapEvent{Id: id, Pod: "web-1", Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{}}})
	}
	for id := range uint64(pending) {
		evs = append(evs, &apiv1.TapEvent{Id: 1e6 + id, Pod: "web-1", Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Path: "/"}}})
	}
	file := filepath.Join(t.TempDir(), "big.har")
	var errw bytes.Buffer
	if err := run(t.Context(), io.Discard, &errw, evs, model.TapRequest{}, "json", options{export: "har", file: file}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var har tapexport.HAR
	if err := json.Unmarshal(data, &har); err != nil {
		t.Fatal(err)
	}
	if n := len(har.Log.Entries); n != MaxExport {
		t.Errorf("%d entries exported, want %d", n, MaxExport)
	}
	if want := fmt.Sprintf("warning: %d more requests were not exported", extra+pending); !strings.Contains(errw.String(), want) {
		t.Errorf("stderr %q lacks %q", errw.String(), want)
	}
}
