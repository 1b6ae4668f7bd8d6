// Package top is the aggregation behind `trellis top`: tap events in, one
// row per (direction, source, destination, method, path) out, sorted by
// volume. It is pure (no clock, no I/O) so the terminal view, -o json and
// the tests share it.
package top

import (
	"cmp"
	"slices"
	"strings"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// DefaultMaxPending bounds the requests seen without their end yet: a
// stream that drops ends (tap's rate limit) must not grow memory forever.
const DefaultMaxPending = 10000

// Row is one line of `trellis top`.
type Row struct {
	Direction   string `json:"direction"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	// Count is how many requests finished; Successes of them succeeded
	// (no error, HTTP status < 500, gRPC status OK when it is gRPC).
	Count     uint64 `json:"count"`
	Successes uint64 `json:"successes"`
	// Latencies from the request's start to the response's end.
	Best  time.Duration `json:"-"`
	Worst time.Duration `json:"-"`
	Last  time.Duration `json:"-"`
	// The same in milliseconds, for -o json.
	BestMs      float64 `json:"bestMs"`
	WorstMs     float64 `json:"worstMs"`
	LastMs      float64 `json:"lastMs"`
	SuccessRate float64 `json:"successRate"`
}

type rowKey struct{ direction, source, destination, method, path string }

// reqKey names one request: ids are unique per proxy and direction.
type reqKey struct {
	namespace, pod, direction string
	id                        uint64
}

type pending struct {
	row    rowKey
	status uint32 // HTTP status of the response head, 0 until seen
	seq    uint64 // arrival order, for eviction
}

// Aggregator folds tap events into rows. Not safe for concurrent use.
type Aggregator struct {
	// MaxPending bounds the requests awaiting their end
	// (DefaultMaxPending when 0); past it the oldest is forgotten.
	MaxPending int

	pending map[reqKey]*pending
	rows    map[rowKey]*Row
	seq     uint64
	dropped uint64
}

// Add folds one event in. Events of a request arrive in order (request
// init, response init, response end) on one proxy's stream; an end whose
// start was not seen (tap started mid-request, or the start was sampled
// out) is ignored: without its method and path it has no row.
func (a *Aggregator) Add(ev *apiv1.TapEvent) {
	if a.pending == nil {
		a.pending, a.rows = map[reqKey]*pending{}, map[rowKey]*Row{}
	}
	k := reqKey{ev.GetNamespace(), ev.GetPod(), ev.GetDirection(), ev.GetId()}
	switch {
	case ev.GetRequestInit() != nil:
		a.start(k, ev)
	case ev.GetResponseInit() != nil:
		if p := a.pending[k]; p != nil {
			p.status = ev.GetResponseInit().GetHttpStatus()
		}
	case ev.GetResponseEnd() != nil:
		p := a.pending[k]
		if p == nil {
			return
		}
		delete(a.pending, k)
		a.finish(p, ev.GetResponseEnd())
	}
}

func (a *Aggregator) start(k reqKey, ev *apiv1.TapEvent) {
	max := cmp.Or(a.MaxPending, DefaultMaxPending)
	for len(a.pending) >= max {
		a.evictOldest()
	}
	a.seq++
	ri := ev.GetRequestInit()
	a.pending[k] = &pending{seq: a.seq, row: rowKey{
		direction:   ev.GetDirection(),
		source:      source(ev),
		destination: destination(ev, ri.GetAuthority()),
		method:      ri.GetMethod(),
		path:        cleanPath(ri.GetPath()),
	}}
}

func (a *Aggregator) evictOldest() {
	var oldest reqKey
	var seq uint64
	for k, p := range a.pending {
		if seq == 0 || p.seq < seq {
			oldest, seq = k, p.seq
		}
	}
	delete(a.pending, oldest)
	a.dropped++
}

func (a *Aggregator) finish(p *pending, end *apiv1.TapEvent_ResponseEnd) {
	r := a.rows[p.row]
	if r == nil {
		r = &Row{Direction: p.row.direction, Source: p.row.source, Destination: p.row.destination,
			Method: p.row.method, Path: p.row.path}
		a.rows[p.row] = r
	}
	lat := end.GetSinceRequestInit().AsDuration()
	if r.Count == 0 || lat < r.Best {
		r.Best = lat
	}
	if lat > r.Worst {
		r.Worst = lat
	}
	r.Last = lat
	r.Count++
	if succeeded(p.status, end) {
		r.Successes++
	}
}

// succeeded classifies a finished request as the proxy's metrics do: an
// error or a 5xx fails; a gRPC status, when there is one, decides alone.
func succeeded(status uint32, end *apiv1.TapEvent_ResponseEnd) bool {
	if end.GetError() != "" {
		return false
	}
	if g := end.GetGrpcStatus(); g >= 0 {
		return g == 0
	}
	return status != 0 && status < 500
}

// Rows returns the rows, most requests first (ties in key order, so the
// view does not flicker).
func (a *Aggregator) Rows() []Row {
	out := make([]Row, 0, len(a.rows))
	for _, r := range a.rows {
		row := *r
		row.BestMs, row.WorstMs, row.LastMs = ms(r.Best), ms(r.Worst), ms(r.Last)
		if r.Count > 0 {
			row.SuccessRate = float64(r.Successes) / float64(r.Count)
		}
		out = append(out, row)
	}
	slices.SortFunc(out, func(x, y Row) int {
		return cmp.Or(cmp.Compare(y.Count, x.Count), cmp.Compare(x.Source, y.Source),
			cmp.Compare(x.Destination, y.Destination), cmp.Compare(x.Method, y.Method),
			cmp.Compare(x.Path, y.Path), cmp.Compare(x.Direction, y.Direction))
	})
	return out
}

// Pending is how many requests await their end.
func (a *Aggregator) Pending() int { return len(a.pending) }

// Dropped is how many pending requests were forgotten past MaxPending.
func (a *Aggregator) Dropped() uint64 { return a.dropped }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func podName(ns, pod string) string { return strings.TrimPrefix(ns+"/"+pod, "/") }

// cleanPath drops the query: it may carry secrets, and would make a row
// per distinct value.
func cleanPath(p string) string { return strings.SplitN(p, "?", 2)[0] }

func isOutbound(ev *apiv1.TapEvent) bool { return ev.GetDirection() == "outbound" }

// source is who sent the request: the tapped pod for outbound traffic;
// for inbound, the caller's identity (as sa.ns), else its address.
func source(ev *apiv1.TapEvent) string {
	if isOutbound(ev) {
		return podName(ev.GetNamespace(), ev.GetPod())
	}
	if n, ok := shortIdentity(ev.GetSourceIdentity()); ok {
		return n
	}
	return cmp.Or(host(ev.GetSource()), "-")
}

// destination is who served it: the authority called for outbound
// traffic; the tapped pod for inbound.
func destination(ev *apiv1.TapEvent, authority string) string {
	if isOutbound(ev) {
		return cmp.Or(authority, ev.GetDestination(), "-")
	}
	return podName(ev.GetNamespace(), ev.GetPod())
}

// shortIdentity renders a SPIFFE ID as "sa.ns" (the identity's DNS form's
// first labels), what a column has room for.
func shortIdentity(id string) (string, bool) {
	if id == "" {
		return "", false
	}
	p, err := identity.Parse(id)
	if err != nil {
		return id, true
	}
	return p.ServiceAccount + "." + p.Namespace, true
}

// host strips the port of an address ("10.0.0.1:4143" -> "10.0.0.1").
func host(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 && !strings.HasSuffix(addr, "]") {
		return strings.Trim(addr[:i], "[]")
	}
	return addr
}
