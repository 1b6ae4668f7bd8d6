package topcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/top"
)

func TestFrameFitsTheTerminal(t *testing.T) {
	var rows []top.Row
	for i := range 30 {
		rows = append(rows, top.Row{Source: "demo/web-1", Destination: "books:80", Method: "GET", Path: "/p" + strings.Repeat("x", i), Count: uint64(100 - i)})
	}
	f := frame(Snapshot{Target: "deployments/web", Rows: rows}, 40, 10)
	lines := strings.Split(f, "\r\n")
	if len(lines) != 10 {
		t.Fatalf("%d lines for a 10-line terminal:\n%s", len(lines), f)
	}
	for _, l := range lines {
		l = strings.TrimPrefix(strings.TrimSuffix(strings.TrimSuffix(l, "\x1b[J"), "\x1b[K"), "\x1b[H")
		if len(l) > 40 {
			t.Errorf("line of %d columns on a 40-column terminal: %q", len(l), l)
		}
	}
	if !strings.Contains(f, "... 25 more rows") {
		t.Errorf("no note of the rows left out:\n%s", f)
	}
}

func TestLatency(t *testing.T) {
	for d, want := range map[time.Duration]string{1500 * time.Microsecond: "1.50ms", 42 * time.Millisecond: "42ms", 2500 * time.Millisecond: "2.50s"} {
		if got := latency(d); got != want {
			t.Errorf("latency(%v) = %q, want %q", d, got, want)
		}
	}
}

// writeSession writes n GET /books requests from web-1 (every third a
// 503) and one POST /orders, as the tap API streams them.
func writeSession(t *testing.T, n int) string {
	t.Helper()
	var b bytes.Buffer
	emit := func(ev *apiv1.TapEvent) {
		j, err := protojson.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	req := func(id uint64, method, path string, status uint32, lat time.Duration) {
		base := func() *apiv1.TapEvent {
			return &apiv1.TapEvent{Namespace: "demo", Pod: "web-1", Direction: "outbound", Id: id}
		}
		e := base()
		e.Event = &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: method, Authority: "books:80", Path: path}}
		emit(e)
		e = base()
		e.Event = &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: status}}
		emit(e)
		e = base()
		e.Event = &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{SinceRequestInit: durationpb.New(lat), GrpcStatus: -1}}
		emit(e)
	}
	for i := range n {
		status := uint32(200)
		if i%3 == 0 {
			status = 503
		}
		req(uint64(i+1), "GET", "/books", status, time.Duration(i+1)*time.Millisecond)
	}
	req(uint64(n+1), "POST", "/orders", 201, 7*time.Millisecond)
	p := filepath.Join(t.TempDir(), "session.ndjson")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSnapshotsJSON: without a terminal, -o json prints one snapshot per
// line; the last holds every request of the session.
func TestSnapshotsJSON(t *testing.T) {
	cmd := New(nil)
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"deploy/web", "-n", "demo", "--file", writeSession(t, 9), "-o", "json", "--refresh", "1h"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var last Snapshot
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Fatalf("not one JSON object per line: %v\n%s", err, sc.Text())
		}
	}
	if last.Ended != "ok" || last.Target != "deployments/web -n demo" || len(last.Rows) != 2 {
		t.Fatalf("last snapshot %+v", last)
	}
	r := last.Rows[0]
	if r.Path != "/books" || r.Count != 9 || r.Successes != 6 || r.BestMs != 1 || r.WorstMs != 9 || r.LastMs != 9 {
		t.Errorf("busiest row %+v, want /books: 9 requests, 6 ok, 1..9 ms, last 9", r)
	}
}

func TestFileErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bad.ndjson")
	if err := os.WriteFile(p, []byte("{\"id\": 1}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := New(nil)
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"deploy/web", "--file", p, "-o", "json"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("bad line: %v", err)
	}
	cmd = New(nil)
	cmd.SetArgs([]string{"deploy/web", "--direction", "sideways"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--direction") {
		t.Fatalf("bad direction: %v", err)
	}
}

// FuzzFileTapper: a hostile session file never panics; every line is an
// event or an error naming its line.
func FuzzFileTapper(f *testing.F) {
	f.Add([]byte(`{"id":"1","requestInit":{"method":"GET","path":"/"}}` + "\n"))
	f.Add([]byte("\n\n{}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "s.ndjson")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var a top.Aggregator
		err := fileTapper{path: p}.Tap(t.Context(), model.TapRequest{}, func(ev *apiv1.TapEvent) error { a.Add(ev); return nil })
		if err != nil && !strings.Contains(err.Error(), p) {
			t.Fatalf("error without the file name: %v", err)
		}
		_ = a.Rows()
	})
}
