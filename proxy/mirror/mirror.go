// Package mirror is the outbound mirroring stage (the Gateway API's
// RequestMirror filter, apiv1.Mirror): for each of a route's mirrors, a
// share of the requests it matches is copied, fire-and-forget, to the
// mirror's service through the same machinery as any request (resolve,
// balance, the mesh pool), and the copy's response is discarded. The
// caller never waits for a copy nor sees its fate: copies run detached
// from the request, under their own timeout, at most MaxInFlight at once
// (more are dropped), and only for requests whose body is empty or short
// enough to hold (MaxBody; streamed bodies are skipped). Every copy is
// counted in trellis_mirror_requests_total{route,result}.
package mirror

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Defaults of a Stage.
const (
	DefaultMaxBody     = 64 << 10
	DefaultMaxInFlight = 100
	DefaultTimeout     = 10 * time.Second
)

// Million is the denominator of a mirror's share.
const Million = 1_000_000

// Send sends a copy and reports whether the destination answered (any
// status): false when the proxy had to answer it itself.
type Send func(r *http.Request) bool

// Stage mirrors routes' requests. Build it with New.
type Stage struct {
	send    Send
	metrics *metrics.Routes
	maxBody int64
	timeout time.Duration
	slots   chan struct{}
	rand    func() uint64
}

// Config configures a Stage; zero values are the defaults.
type Config struct {
	Send        Send
	Metrics     *metrics.Routes // nil: not counted
	MaxBody     int64
	MaxInFlight int
	Timeout     time.Duration
	Rand        func() uint64 // nil: math/rand/v2
}

// New returns a mirroring stage sending copies with c.Send.
func New(c Config) *Stage {
	s := &Stage{send: c.Send, metrics: c.Metrics, maxBody: c.MaxBody, timeout: c.Timeout, rand: c.Rand}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBody
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	s.slots = make(chan struct{}, c.MaxInFlight)
	if s.rand == nil {
		s.rand = rand.Uint64
	}
	return s
}

// Layer is the stage.
func (s *Stage) Layer(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if len(x.Route.GetMirrors()) == 0 {
			return next.Serve(x)
		}
		if err := s.mirror(x); err != nil {
			return err
		}
		return next.Serve(x)
	})
}

// mirror starts the copies of x its route asks for; the error is the
// client's, when reading its body failed.
func (s *Stage) mirror(x *pipeline.Exchange) error {
	route := x.Route.GetName()
	var chosen []string
	for _, m := range x.Route.GetMirrors() {
		if mm := m.GetMillionths(); mm == 0 || s.rand()%Million < uint64(mm) {
			chosen = append(chosen, m.GetAuthority())
		}
	}
	if len(chosen) == 0 {
		return nil
	}
	body, ok, err := s.hold(x)
	if err != nil {
		return err
	}
	for _, authority := range chosen {
		if !ok {
			s.metrics.Mirror(route, metrics.MirrorSkipped)
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.metrics.Mirror(route, metrics.MirrorDropped)
			continue
		}
		// Cloned here: the stages after this one change x.R.
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		go s.copy(route, clone(ctx, x.R, authority, body), cancel)
	}
	return nil
}

// hold reads x's body when it is short enough to copy, and gives x the
// held bytes in its place; ok false: the body is streamed or too large
// (or waits for 100 Continue), and is left alone.
func (s *Stage) hold(x *pipeline.Exchange) (body []byte, ok bool, err error) {
	r := x.R
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return nil, true, nil
	}
	if r.ContentLength < 0 || r.ContentLength > s.maxBody || r.Header.Get("Expect") != "" {
		return nil, false, nil
	}
	cb := proxyerr.ClientBody(r.Body)
	body = make([]byte, r.ContentLength)
	if _, err := io.ReadFull(cb, body); err != nil {
		if _, cancelled := proxyerr.Cause(r.Context(), cb, err); cancelled {
			return nil, false, pipeline.ErrCancelled
		}
		return nil, false, proxyerr.Classify(x.Ctx, err, proxyerr.ToPeer, x.Dest.Dst)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, true, nil
}

// clone is the copy of r (its body held) for authority.
func clone(ctx context.Context, r *http.Request, authority string, body []byte) *http.Request {
	c := r.Clone(ctx)
	c.Host, c.URL.Host, c.URL.Scheme = authority, "", ""
	c.RequestURI = ""
	c.Body, c.ContentLength = http.NoBody, int64(len(body))
	if len(body) > 0 {
		c.Body = io.NopCloser(bytes.NewReader(body))
	}
	return c
}

// copy sends c, a copy, and counts it.
func (s *Stage) copy(route string, c *http.Request, cancel context.CancelFunc) {
	defer func() { <-s.slots }()
	defer cancel()
	result := metrics.MirrorFailed
	if s.send(c) {
		result = metrics.MirrorSent
	}
	s.metrics.Mirror(route, result)
}
