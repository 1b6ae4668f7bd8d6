package top

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// req builds the events of one request as a proxy streams them.
type req struct {
	ns, pod, dir      string
	id                uint64
	method, authority string
	path              string
	srcAddr, srcID    string
	status            uint32 // 0: no response head
	grpc              int32
	err               string
	lat               time.Duration
	noStart, noEnd    bool
}

func (r req) events() []*apiv1.TapEvent {
	base := func() *apiv1.TapEvent {
		return &apiv1.TapEvent{Namespace: r.ns, Pod: r.pod, Direction: r.dir, Id: r.id,
			Source: r.srcAddr, SourceIdentity: r.srcID}
	}
	var out []*apiv1.TapEvent
	if !r.noStart {
		e := base()
		e.Event = &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{
			Method: r.method, Authority: r.authority, Path: r.path}}
		out = append(out, e)
	}
	if r.status != 0 {
		e := base()
		e.Event = &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: r.status}}
		out = append(out, e)
	}
	if !r.noEnd {
		e := base()
		e.Event = &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{
			SinceRequestInit: durationpb.New(r.lat), GrpcStatus: r.grpc, Error: r.err}}
		out = append(out, e)
	}
	return out
}

func out(id uint64, path string, status uint32, lat time.Duration) req {
	return req{ns: "demo", pod: "web-1", dir: "outbound", id: id, method: "GET",
		authority: "books.demo.svc.cluster.local:80", path: path, status: status, grpc: -1, lat: lat}
}

func TestAggregate(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		reqs []req
		want []Row
	}{
		{"latencies best worst last, sorted by count", []req{
			out(1, "/books", 200, 30*ms), out(2, "/books", 200, 10*ms), out(3, "/authors", 200, 5*ms),
			out(4, "/books?secret=x", 200, 20*ms),
		}, []Row{
			{Direction: "outbound", Source: "demo/web-1", Destination: "books.demo.svc.cluster.local:80", Method: "GET", Path: "/books",
				Count: 3, Successes: 3, Best: 10 * ms, Worst: 30 * ms, Last: 20 * ms},
			{Direction: "outbound", Source: "demo/web-1", Destination: "books.demo.svc.cluster.local:80", Method: "GET", Path: "/authors",
				Count: 1, Successes: 1, Best: 5 * ms, Worst: 5 * ms, Last: 5 * ms},
		}},
		{"5xx, errors and gRPC statuses fail; 4xx succeeds", []req{
			out(1, "/b", 500, ms), out(2, "/b", 404, ms),
			func() req { r := out(3, "/b", 200, ms); r.err = "connection reset"; return r }(),
			func() req { r := out(4, "/b", 200, ms); r.grpc = 14; return r }(),
			func() req { r := out(5, "/b", 200, ms); r.grpc = 0; return r }(),
			func() req { r := out(6, "/b", 0, ms); return r }(), // no response head: failed
		}, []Row{{Direction: "outbound", Source: "demo/web-1", Destination: "books.demo.svc.cluster.local:80", Method: "GET", Path: "/b",
			Count: 6, Successes: 2, Best: ms, Worst: ms, Last: ms}}},
		{"an end without its start is ignored; a start without end is not counted", []req{
			func() req { r := out(1, "/b", 200, ms); r.noStart = true; return r }(),
			func() req { r := out(2, "/b", 200, ms); r.noEnd = true; return r }(),
		}, []Row{}},
		{"inbound: source is the caller's identity, else its address", []req{
			{ns: "demo", pod: "books-1", dir: "inbound", id: 1, method: "GET", path: "/books", status: 200, grpc: -1, lat: ms,
				srcAddr: "10.0.0.7:41234", srcID: "spiffe://cluster.local/ns/demo/sa/web"},
			{ns: "demo", pod: "books-1", dir: "inbound", id: 2, method: "GET", path: "/books", status: 200, grpc: -1, lat: ms,
				srcAddr: "10.0.0.9:5555"},
		}, []Row{
			{Direction: "inbound", Source: "10.0.0.9", Destination: "demo/books-1", Method: "GET", Path: "/books", Count: 1, Successes: 1, Best: ms, Worst: ms, Last: ms},
			{Direction: "inbound", Source: "web.demo", Destination: "demo/books-1", Method: "GET", Path: "/books", Count: 1, Successes: 1, Best: ms, Worst: ms, Last: ms},
		}},
		{"the same id on two pods is two requests", []req{
			out(1, "/b", 200, ms),
			func() req { r := out(1, "/b", 500, 2*ms); r.pod = "web-2"; return r }(),
		}, []Row{
			{Direction: "outbound", Source: "demo/web-1", Destination: "books.demo.svc.cluster.local:80", Method: "GET", Path: "/b", Count: 1, Successes: 1, Best: ms, Worst: ms, Last: ms},
			{Direction: "outbound", Source: "demo/web-2", Destination: "books.demo.svc.cluster.local:80", Method: "GET", Path: "/b", Count: 1, Best: 2 * ms, Worst: 2 * ms, Last: 2 * ms},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a Aggregator
			for _, r := range tc.reqs {
				for _, e := range r.events() {
					a.Add(e)
				}
			}
			got := a.Rows()
			if len(got) != len(tc.want) {
				t.Fatalf("got %d rows %+v, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				g := got[i]
				w.BestMs, w.WorstMs, w.LastMs = ms2(w.Best), ms2(w.Worst), ms2(w.Last)
				if w.Count > 0 {
					w.SuccessRate = float64(w.Successes) / float64(w.Count)
				}
				if g != w {
					t.Errorf("row %d:\n got %+v\nwant %+v", i, g, w)
				}
			}
		})
	}
}

func ms2(d time.Duration) float64 { return float64(d) / 1e6 }

// TestPendingBound: starts without ends never grow past MaxPending; the
// oldest goes first, so a recent request still completes.
func TestPendingBound(t *testing.T) {
	a := Aggregator{MaxPending: 3}
	for id := uint64(1); id <= 10; id++ {
		a.Add(out(id, "/x", 200, time.Millisecond).events()[0])
	}
	if a.Pending() != 3 || a.Dropped() != 7 {
		t.Fatalf("pending %d dropped %d, want 3 and 7", a.Pending(), a.Dropped())
	}
	for _, e := range out(10, "/x", 200, time.Millisecond).events()[1:] {
		a.Add(e)
	}
	for _, e := range out(1, "/x", 200, time.Millisecond).events()[1:] {
		a.Add(e) // evicted: ignored
	}
	if rows := a.Rows(); len(rows) != 1 || rows[0].Count != 1 {
		t.Fatalf("rows %+v, want one with count 1", rows)
	}
}
