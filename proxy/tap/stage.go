package tap

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Layer is the tap stage of the chain of direction dir (metrics.Inbound or
// metrics.Outbound). With no tap open it costs one atomic load.
func (h *Hub) Layer(dir string) pipeline.Layer {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
			if h.n.Load() == 0 {
				return next.Serve(x)
			}
			return h.serve(dir, next, x)
		})
	}
}

// serve runs x through next while recording it for the taps that may
// match it. What it learns only later (the endpoint and its identity, the
// route) is filled in by the stages after it, so the full match and the
// request_init event wait for the response's head (or the end).
func (h *Hub) serve(dir string, next pipeline.Handler, x *pipeline.Exchange) error {
	r := x.R
	if r.Method == http.MethodConnect || forward.IsUpgrade(r.Header) {
		// A tunnel, not HTTP exchanges: it leaves the chain as bytes.
		return next.Serve(x)
	}
	cands := h.candidates(dir, r.Method, r.URL.Path)
	if len(cands) == 0 {
		return next.Serve(x)
	}
	t := &tapped{hub: h, dir: dir, x: x, cands: cands, start: h.now()}
	// The request body is mostly read before the taps are chosen (at the
	// response's head): until then, copy for the candidates; decide
	// lowers the limit to the chosen taps'.
	for _, s := range cands {
		t.names = t.names || s.headerNames
		t.bodyMax = max(t.bodyMax, s.bodyBytes)
	}
	if t.names {
		t.reqNames = headerNames(r.Header)
	}
	w, body := x.W, r.Body
	t.w = recorder{ResponseWriter: w, t: t}
	x.W = &t.w
	if body != nil && body != http.NoBody {
		t.body = &teeBody{rc: body, hub: h, max: t.bodyMax}
		r.Body = t.body
	}
	err := next.Serve(x)
	x.W, r.Body = w, body
	t.finish(err)
	return err
}

// candidates returns the open taps whose filter may match a request with
// what is known at its start.
func (h *Hub) candidates(dir, method, path string) []*Sub {
	p := h.subs.Load()
	if p == nil {
		return nil
	}
	var out []*Sub
	for _, s := range *p {
		m := &s.match
		if (m.Direction == "" || m.Direction == dir) && (m.Method == "" || m.Method == method) &&
			strings.HasPrefix(path, m.PathPrefix) {
			out = append(out, s)
		}
	}
	return out
}

// tapped is one request the taps may report.
type tapped struct {
	hub     *Hub
	dir     string
	x       *pipeline.Exchange
	cands   []*Sub
	start   time.Time
	names   bool
	bodyMax int

	w        recorder
	body     *teeBody
	reqNames []string

	decided  bool
	req      Request
	chosen   []chosen
	respAt   time.Time
	status   int
	respHdrs []string
}

// chosen is a tap that reports this request, under this id.
type chosen struct {
	s  *Sub
	id uint64
}

// decide picks, once, the taps that report this request (full filter,
// limit, sampling, rate) from what the chain has learnt by now.
func (t *tapped) decide(now time.Time) {
	if t.decided {
		return
	}
	t.decided = true
	t.req = t.hub.describe(t.dir, t.x)
	bodyMax := 0
	for _, s := range t.cands {
		if s.admit(&t.req, now) {
			t.chosen = append(t.chosen, chosen{s: s, id: s.ids.Add(1)})
			bodyMax = max(bodyMax, s.bodyBytes)
		}
	}
	// The request body copied for taps that do not report the request is
	// dropped; with no chosen tap capturing bodies, copying stops (the
	// response's body is written after decide: it is only ever copied for
	// the chosen taps).
	t.bodyMax = bodyMax
	if t.body != nil {
		t.body.limit(bodyMax)
	}
}

// responded is the response's head (status 0: none): the taps that
// report the request are chosen and sent request_init and response_init.
func (t *tapped) responded(status int, h http.Header) {
	if t.decided {
		return
	}
	now := t.hub.now()
	t.decide(now)
	t.respAt, t.status = now, status
	if len(t.chosen) == 0 {
		return
	}
	if t.names && h != nil {
		t.respHdrs = headerNames(h)
	}
	for _, c := range t.chosen {
		t.sendInit(c)
	}
}

// finish sends each chosen tap response_end (and, when no response head
// went through, request_init and response_init first).
func (t *tapped) finish(err error) {
	errText := ""
	if !t.decided {
		// No response head went through this stage: an error answer the
		// observe stage renders, or nobody left to answer.
		status, why := outcome(err)
		t.responded(status, nil)
		errText = why
	} else if err != nil {
		_, errText = outcome(err)
	}
	if len(t.chosen) == 0 {
		return
	}
	end := t.hub.now()
	if errText == "" {
		errText = t.w.err
	}
	if errText == "" && t.x.R.Context().Err() != nil {
		// The client reset or abandoned the stream mid-response.
		errText = "cancelled"
	}
	if errText == "" && t.x.Broken() {
		// The response's source broke mid-body: the client's stream is
		// aborted.
		errText = "reset"
	}
	e := endInfo{at: end, errText: errText, grpc: grpcStatus(t.w.Header()), respBytes: t.w.n}
	if t.body != nil {
		e.reqBytes, e.reqBody, e.reqTrunc = t.body.take()
	}
	// The bodies now belong to the events (bounded by the taps' queues).
	e.respBody, e.respTrunc = t.w.buf, t.w.trunc
	t.hub.release(len(t.w.buf))
	t.w.buf, t.bodyMax = nil, 0
	for _, c := range t.chosen {
		t.sendEnd(c, &e)
	}
}

// outcome is the status and error text of a request the chain did not
// answer itself: what the observe stage will answer.
func outcome(err error) (int, string) {
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, pipeline.ErrCancelled):
		return 0, "cancelled"
	}
	var e *proxyerr.Error
	if errors.As(err, &e) {
		return e.Status, e.Reason
	}
	return http.StatusBadGateway, proxyerr.ReasonUpstream
}

// Request is what a tap knows of one request, and matches on.
type Request struct {
	Direction                           string
	Method, Scheme, Authority, Path     string
	Source, Destination                 string
	SourceIdentity, DestinationIdentity string
	TLS                                 bool
	Route                               string
}

// describe is what x tells of its request, once the chain went through.
func (h *Hub) describe(dir string, x *pipeline.Exchange) Request {
	r := x.R
	q := Request{Direction: dir, Method: field(r.Method), Scheme: "http", Authority: field(r.Host), Path: field(r.URL.Path)}
	if x.Conn.Raw != nil {
		q.Source = x.Conn.Raw.RemoteAddr().String()
	}
	if dir == metrics.Inbound {
		q.SourceIdentity, q.DestinationIdentity, q.TLS = x.Conn.Peer, h.self, x.Conn.TLS
		q.Destination = x.AppAddr
		return q
	}
	if x.Authority != "" {
		q.Authority = field(x.Authority)
	}
	q.SourceIdentity, q.DestinationIdentity, q.TLS = h.self, x.Key.PeerIdentity, x.Key.TLS
	q.Destination, q.Route = x.Endpoint, field(x.Dest.Dst)
	if q.Destination == "" {
		q.Destination = x.Dest.Addr
	}
	return q
}

// field is s, a string of the request's, as an event keeps it: at most
// maxFieldLen bytes, copied when cut so that the queued event does not
// keep the request's whole string alive (valid, at send time, mends a
// rune the cut split).
func field(s string) string {
	if len(s) <= maxFieldLen {
		return s
	}
	return strings.Clone(s[:maxFieldLen])
}

// matches is the whole filter.
func (s *Sub) matches(r *Request) bool {
	m := &s.match
	switch {
	case m.Direction != "" && m.Direction != r.Direction,
		m.Method != "" && m.Method != r.Method,
		!strings.HasPrefix(r.Path, m.PathPrefix),
		m.Authority != "" && m.Authority != r.Authority,
		m.FromIdentity != "" && m.FromIdentity != r.SourceIdentity,
		m.ToIdentity != "" && m.ToIdentity != r.DestinationIdentity,
		m.PeerIdentity != "" && m.PeerIdentity != r.SourceIdentity && m.PeerIdentity != r.DestinationIdentity:
		return false
	}
	return true
}

// admit decides whether s reports r: filter, limit, sampling, then the
// rate (a request over it is dropped and counted, never queued).
func (s *Sub) admit(r *Request, now time.Time) bool {
	if !s.matches(r) {
		return false
	}
	if s.limit > 0 && s.admitted.Load() >= s.limit {
		return false
	}
	if s.sample < 1 && s.rnd() >= s.sample {
		return false
	}
	if !s.bucket.take(now) {
		s.m.Dropped.WithLabelValues(DropRate).Inc()
		return false
	}
	return s.limit == 0 || s.admitted.Add(1) <= s.limit
}
