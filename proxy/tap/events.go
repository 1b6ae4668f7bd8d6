package tap

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/forward"
)

// recorder is the response writer while a request is tapped: it sees the
// head, counts the body and keeps its first bytes (when asked), and passes
// everything through unchanged.
type recorder struct {
	http.ResponseWriter
	t     *tapped
	wrote bool
	n     uint64
	buf   []byte
	trunc bool
	err   string
}

func (w *recorder) WriteHeader(code int) {
	if !w.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.wrote = true
		w.t.responded(code, w.ResponseWriter.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if !w.wrote {
		// The writer sends an implicit 200 head: the same head here.
		w.wrote = true
		w.t.responded(http.StatusOK, w.ResponseWriter.Header())
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += uint64(n)
	if max := w.t.bodyMax; max > 0 && n > 0 {
		w.buf, w.trunc = w.t.hub.tee(w.buf, p[:n], max, w.trunc)
	}
	if err != nil && w.err == "" {
		w.err = "reset"
	}
	return n, err
}

// Flush and FlushError pass a streaming response's flushes through.
func (w *recorder) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController and forward's copy use.
func (w *recorder) FlushError() error {
	switch f := w.ResponseWriter.(type) {
	case interface{ FlushError() error }:
		return f.FlushError()
	case http.Flusher:
		f.Flush()
	}
	return nil
}

// Unwrap lets http.ResponseController reach the writer underneath.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// tee appends to buf what fits of p under max and under the hub's body
// budget, and whether some did not.
func (h *Hub) tee(buf, p []byte, max int, trunc bool) ([]byte, bool) {
	got := 0
	if room := max - len(buf); room > 0 && len(p) > 0 {
		got = h.reserve(min(room, len(p)))
		buf = append(buf, p[:got]...)
	}
	return buf, trunc || len(p) > got
}

// shrink bounds buf to max bytes (0: none kept), giving what it drops
// back to the hub's body budget.
func (h *Hub) shrink(buf []byte, max int, trunc bool) ([]byte, bool) {
	if len(buf) <= max {
		return buf, trunc
	}
	h.release(len(buf) - max)
	if max == 0 {
		return nil, true
	}
	// A copy: the larger array would stay alive under a shorter slice.
	return slices.Clone(buf[:max]), true
}

// teeBody is the request body while a request is tapped: counted, its
// first bytes kept when asked. The HTTP/2 client reads it from its own
// goroutine, which may outlive the request's stage: hence the lock.
type teeBody struct {
	rc    io.ReadCloser
	hub   *Hub
	mu    sync.Mutex
	max   int
	n     uint64
	buf   []byte
	trunc bool
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.mu.Lock()
		b.n += uint64(n)
		if b.max > 0 {
			b.buf, b.trunc = b.hub.tee(b.buf, p[:n], b.max, b.trunc)
		}
		b.mu.Unlock()
	}
	return n, err
}

func (b *teeBody) Close() error { return b.rc.Close() }

// Buffered asks the tapped body (forward.BufferedOf).
func (b *teeBody) Buffered() (int, bool) {
	n, end, _ := forward.BufferedOf(b.rc)
	return n, end
}

// limit keeps at most max bytes from now on (0: none, and no more
// copying), once the taps that report the request are known.
func (b *teeBody) limit(max int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.max = max
	b.buf, b.trunc = b.hub.shrink(b.buf, max, b.trunc)
}

// take ends the copying and hands what was kept over to the events: the
// bytes leave the budget of requests in flight.
func (b *teeBody) take() (uint64, []byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	buf := b.buf
	b.hub.release(len(buf))
	b.buf, b.max = nil, 0
	return b.n, buf, b.trunc
}

// endInfo is what response_end reports, the same for every tap.
type endInfo struct {
	at                  time.Time
	errText             string
	grpc                int32
	respBytes, reqBytes uint64
	reqBody, respBody   []byte
	reqTrunc, respTrunc bool
}

// event is an event of this request with its common fields.
func (t *tapped) event(id uint64, at time.Time) *apiv1.TapEvent {
	q := &t.req
	return &apiv1.TapEvent{
		Direction: q.Direction, Source: q.Source, Destination: valid(q.Destination),
		SourceIdentity: q.SourceIdentity, DestinationIdentity: q.DestinationIdentity,
		Id: id, Tls: q.TLS, Route: valid(q.Route), Time: timestamppb.New(at),
	}
}

// sendInit sends c's tap request_init and, when there was a response
// head, response_init.
func (t *tapped) sendInit(c chosen) {
	s, q := c.s, &t.req
	ev := t.event(c.id, t.start)
	ri := &apiv1.TapEvent_RequestInit{
		Method: valid(q.Method), Scheme: q.Scheme, Authority: valid(q.Authority), Path: valid(q.Path),
	}
	if s.headerNames {
		ri.HeaderNames = t.reqNames
	}
	ev.Event = &apiv1.TapEvent_RequestInit_{RequestInit: ri}
	s.send(ev)
	if t.status == 0 {
		return
	}
	ev = t.event(c.id, t.respAt)
	rs := &apiv1.TapEvent_ResponseInit{SinceRequestInit: durationpb.New(t.respAt.Sub(t.start)), HttpStatus: uint32(t.status)}
	if s.headerNames {
		rs.HeaderNames = t.respHdrs
	}
	ev.Event = &apiv1.TapEvent_ResponseInit_{ResponseInit: rs}
	s.send(ev)
}

// sendEnd sends c's tap response_end.
func (t *tapped) sendEnd(c chosen, e *endInfo) {
	s := c.s
	end := &apiv1.TapEvent_ResponseEnd{
		SinceRequestInit: durationpb.New(e.at.Sub(t.start)), GrpcStatus: e.grpc,
		ResponseBytes: e.respBytes, RequestBytes: e.reqBytes, Error: e.errText,
	}
	if t.status != 0 {
		end.SinceResponseInit = durationpb.New(e.at.Sub(t.respAt))
	}
	if s.bodyBytes > 0 {
		end.RequestBody, end.RequestBodyTruncated = cut(e.reqBody, e.reqTrunc, s.bodyBytes)
		end.ResponseBody, end.ResponseBodyTruncated = cut(e.respBody, e.respTrunc, s.bodyBytes)
	}
	ev := t.event(c.id, e.at)
	ev.Event = &apiv1.TapEvent_ResponseEnd_{ResponseEnd: end}
	s.send(ev)
	s.endOne()
}

// cut is body bounded to n bytes (the tap's own limit, at most what was
// kept for the most demanding tap), and whether it was cut.
func cut(body []byte, trunc bool, n int) ([]byte, bool) {
	if len(body) > n {
		return body[:n], true
	}
	return body, trunc
}

// headerNames are h's field names, lower case and sorted: never a value.
// Trailers announced by the writer and mesh fields are left out.
func headerNames(h http.Header) []string {
	out := make([]string, 0, len(h))
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || forward.IsMesh(k) {
			continue
		}
		out = append(out, valid(strings.ToLower(k)))
	}
	slices.Sort(out)
	return out
}

// grpcStatus is a gRPC response's grpc-status (trailer, or header of a
// trailers-only response), -1 for any other response or a malformed one.
func grpcStatus(h http.Header) int32 {
	ct := h["Content-Type"]
	if len(ct) == 0 || !forward.IsGRPC(ct[0]) {
		return -1
	}
	v := h[http.TrailerPrefix+"Grpc-Status"]
	if len(v) == 0 {
		v = h["Grpc-Status"]
	}
	if len(v) == 0 {
		return -1
	}
	return ParseGRPCStatus(v[0])
}

// ParseGRPCStatus parses a grpc-status value (a decimal code), -1 when it
// is not one.
func ParseGRPCStatus(v string) int32 {
	if len(v) == 0 || len(v) > 10 || v[0] == '+' || v[0] == '-' {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return -1
	}
	return int32(n)
}

// valid is s as proto3 strings must be (UTF-8): the bytes of a request
// are the peer's, and one invalid string would fail the whole stream.
func valid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
