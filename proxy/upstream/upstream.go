// Package upstream is the last outbound stage: it sends a request to an
// endpoint of its destination (balance pick; HTTP/2 behind Stage.Mesh,
// or plain HTTP/1.1 to an endpoint outside the mesh), retries requests
// that never left or that the peer proves it did not process (on another
// endpoint, at most MaxRetries times), retries what the route's policy
// asks for within the destination's budget (proxy/retry), and writes the
// response. See docs/proxy.md, "Retries and drain", and docs/traffic.md,
// "Retries and budgets".
package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// MaxRetries bounds retries of requests that never left the proxy.
const MaxRetries = 2

// Stage is the upstream stage.
type Stage struct {
	Metrics *metrics.Metrics
	// Errors logs a peer proxy's own error answers passed on.
	Errors *proxyerr.Renderer
	Log    *slog.Logger
	// Mesh returns the HTTP/2 connection to ep: a meshed endpoint's proxy
	// (mesh TLS), or a plain endpoint whose app speaks HTTP/2. The mesh
	// transport is behind it.
	Mesh func(ctx context.Context, ep balance.Endpoint) (http.RoundTripper, error)
	// Plain is the HTTP/1.1 client towards endpoints outside the mesh.
	Plain http.RoundTripper
	// Unprocessed reports whether a failed round trip proves the peer
	// never processed the request (RFC 9113 8.7), which the transport
	// knows.
	Unprocessed func(error) bool
	// Budgets bounds the retries of routes' policies per destination;
	// nil: no policy retries.
	Budgets *retry.Budgets
	// Replay bounds the request bytes kept for replay, process-wide; nil:
	// no bound.
	Replay *retry.Bytes
}

func idString(id identity.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// IsDialError reports whether err is a failure to connect.
func IsDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// sending is one request's state across its attempts.
type sending struct {
	h1         bool
	cb         *proxyerr.Body // the client's body, its read errors marked
	body       []byte         // kept for a retry; nil: cb as it is
	replayable bool
	kept       *keptBody // a body of unknown length, kept as it is sent
	trailers   bool      // the request declared trailers: never replayed
	authority  string
	held       int64           // bytes of Stage.Replay held
	skip       map[string]bool // endpoints that proved unable to take it
	last       *proxyerr.Error // why the last endpoint tried was skipped
	proven     int             // retries of requests proven unprocessed
	routePolicy
}

// Serve is the last stage: it sends the request to an endpoint of
// x.Dest (balanced, over the per-peer mesh pool or plain HTTP/1), retries
// requests that never left or that the peer proves it did not process,
// and writes the response.
func (u *Stage) Serve(x *pipeline.Exchange) error {
	r := x.R
	hdr := r.Header
	forward.RemoveHopByHop(hdr)
	forward.StripMesh(hdr)
	forward.KeepRequestAbsent(hdr)
	if r.ContentLength == 0 {
		// Lets the HTTP/2 client end the stream with the headers.
		r.Body = http.NoBody
	}
	// Declared trailers, read once: the server fills r.Trailer in when
	// the body ends, while a retry decision may be looking.
	s := sending{h1: r.ProtoMajor == 1, authority: x.Authority, trailers: len(r.Trailer) > 0}
	// Whoever reads the body, its read errors are the client's fault. Only
	// the outgoing request gets the wrapper: net/http decides from the type
	// of its own request's body how to finish the exchange.
	if r.Body != nil && r.Body != http.NoBody {
		s.cb = proxyerr.ClientBody(r.Body)
	}
	if s.authority == "" {
		s.authority = x.Dest.Dst
	}
	if f := proxyerr.HeaderListTooLarge(r); f != nil {
		return f
	}
	// A request the peer proves it did not process may be sent again, to
	// another endpoint, if its body can be: none, or a small one of known
	// length kept here. Bodies of unknown length (streams, gRPC) and those
	// the app sends only after 100 Continue are never held back; the
	// former are kept as they are sent (keptBody).
	var berr error
	s.body, s.replayable, s.held, berr = u.replayableBody(r, s.cb)
	defer s.release(u.Replay)
	if berr != nil {
		if _, cancelled := proxyerr.Cause(r.Context(), s.cb, berr); cancelled {
			// The client went away while sending its body.
			return pipeline.ErrCancelled
		}
		return proxyerr.Classify(x.Ctx, berr, proxyerr.ToPeer, x.Dest.Dst)
	}
	if !s.replayable && s.cb != nil && r.ContentLength < 0 && !hasExpect(r) {
		s.kept = newKeptBody(s.cb, u.Replay, u.Metrics)
	}
	u.policyOf(x, &s)
	defer s.endTry()
	for attempt := 0; ; attempt++ {
		x.Attempts = attempt + 1
		resp, err := u.attempt(x, &s, attempt)
		if errors.Is(err, errRetry) {
			if err := s.wait(x); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return err
		}
		if u.retryResponse(x, &s, resp) {
			if err := s.wait(x); err != nil {
				return err
			}
			continue
		}
		x.Metrics()
		x.EditResponse(resp.Header) // routes' response header modifiers
		_, err = forward.WriteResponse(x.W, resp)
		_ = resp.Body.Close()
		x.Wrote(resp.StatusCode, pipeline.GRPCStatus(resp), err)
		return nil
	}
}

// errRetry: the attempt failed in a way another endpoint may not.
var errRetry = errors.New("upstream: retry on another endpoint")

// pick chooses the endpoint of an attempt and labels x with it.
func (u *Stage) pick(x *pipeline.Exchange, s *sending, attempt int) (balance.Endpoint, *balance.Pick, error) {
	x.Key = metrics.Key{Direction: metrics.Outbound, DstService: x.Dest.Dst}
	if x.Dest.Balancer == nil {
		return balance.Endpoint{Addr: x.Dest.Addr}, nil, nil
	}
	pick, err := x.Dest.Balancer.Pick(s.excluded())
	if err != nil && len(s.avoided) > 0 {
		// Only the endpoints a policy retry avoids are left: one of them.
		s.avoided = nil
		pick, err = x.Dest.Balancer.Pick(s.skip)
	}
	if err != nil {
		if attempt > 0 {
			return balance.Endpoint{}, nil, proxyerr.GaveUp(x.Dest.Dst, s.last)
		}
		return balance.Endpoint{}, nil, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints for "+x.Dest.Dst)
	}
	return pick.Endpoint, pick, nil
}

// skipped records why ep is left out of the next attempt.
func (s *sending) skipped(ep balance.Endpoint, why *proxyerr.Error) error {
	s.last = why
	if s.skip == nil {
		s.skip = make(map[string]bool, 2)
	}
	s.skip[ep.Addr] = true
	return errRetry
}

// attempt sends the request to one endpoint: its response, errRetry, or
// the error to answer with.
func (u *Stage) attempt(x *pipeline.Exchange, s *sending, attempt int) (*http.Response, error) {
	ep, pick, err := u.pick(x, s, attempt)
	if err != nil {
		return nil, err
	}
	meshed := !ep.Identity.IsZero()
	x.Key.PeerIdentity, x.Key.TLS = idString(ep.Identity), meshed
	x.Endpoint = ep.Addr
	ctx, r, hdr := s.tryContext(x), x.R, x.R.Header
	appH1, f := toApp(hdr, s.h1, meshed, ep)
	if f != nil {
		if pick != nil {
			pick.Done(0, false)
		}
		return nil, f
	}
	rt, scheme, urlHost, err := u.roundTripper(ctx, ep, meshed, appH1, s.authority)
	if err != nil {
		if pick != nil {
			pick.Done(0, true)
		}
		if u.retry(ctx, x, s, err) {
			return nil, s.skipped(ep, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr))
		}
		return nil, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
	}
	setMeshHeaders(hdr, meshed, s.h1, r.ProtoMinor, ep)
	delete(hdr, forward.HeaderExpect)
	if meshed {
		forward.CarryExpect(hdr)
	}
	out, gotHead := gateContinue(s.outgoing(ctx, r, scheme, urlHost))
	t0 := time.Now()
	resp, err := rt.RoundTrip(out)
	gotHead()
	if err != nil {
		if pick != nil {
			pick.Done(time.Since(t0), x.R.Context().Err() == nil) // the client leaving is no fault of the endpoint's
		}
		return nil, u.failed(x, s, ep, meshed, err)
	}
	if pick != nil {
		pick.Done(time.Since(t0), endpointFailed(resp, meshed))
	}
	if meshed {
		return u.fromPeer(x, s, ep, resp)
	}
	return resp, nil
}

// endpointFailed reports whether resp counts against its endpoint (the
// breaker, failure accrual): a 5xx or a failing grpc-status, except that a
// peer proxy's own answer says by its culprit whose failure it is (a
// client's fault is not the endpoint's, whatever its status or code).
// Only a mesh peer's word counts: the peer proxy removes the header from
// its app's answers, and an unmeshed app could send it to dodge ejection.
func endpointFailed(resp *http.Response, meshed bool) bool {
	if e := proxyerr.FromResponse(resp); meshed && e != nil && e.Culprit != "" {
		return e.Culprit != proxyerr.Client
	}
	return balance.FailedStatus(resp.StatusCode, pipeline.GRPCStatus(resp))
}

// outgoing is the request an attempt sends: r under ctx, with the body
// kept for a retry (or the client's, marked) and the endpoint's URL.
func (s *sending) outgoing(ctx context.Context, r *http.Request, scheme, host string) *http.Request {
	out := r.WithContext(ctx)
	switch {
	case s.body != nil:
		out.Body = io.NopCloser(bytes.NewReader(s.body))
	case s.kept != nil:
		out.Body = s.kept.reader()
	case s.cb != nil:
		out.Body = s.cb
	}
	target := new(url.URL)
	*target = *r.URL
	target.Scheme, target.Host = scheme, host
	out.URL = target
	out.RequestURI = ""
	out.Close = false
	return out
}

// roundTripper is how an attempt reaches ep: the per-peer mesh connection
// (or prior-knowledge HTTP/2 to a plain endpoint), or plain HTTP/1.1; and
// the URL's scheme and host. An interface, not a method value: that would
// be allocated per request.
func (u *Stage) roundTripper(ctx context.Context, ep balance.Endpoint, meshed, appH1 bool, authority string) (http.RoundTripper, string, string, error) {
	if !meshed && appH1 {
		return u.Plain, "http", ep.Addr, nil
	}
	cc, err := u.Mesh(ctx, ep)
	if err != nil {
		return nil, "", "", err
	}
	if meshed {
		return cc, "https", authority, nil
	}
	return cc, "http", authority, nil
}

// failed decides what a failed round trip becomes: errRetry, a
// cancellation, or the error to answer with.
func (u *Stage) failed(x *pipeline.Exchange, s *sending, ep balance.Endpoint, meshed bool, err error) error {
	ctx := s.ctx
	again := !meshed && s.h1 && IsDialError(err) && u.retry(ctx, x, s, err)
	if !again && u.Unprocessed(err) && s.canReplay() {
		again = u.retryUnprocessed(ctx, x, s, err.Error())
	}
	if again {
		return s.skipped(ep, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr))
	}
	if u.retryTimeout(x, s, ep.Addr) {
		return errRetry
	}
	if reason, ok := forward.RequestBodyFault(err); ok {
		// The client's body was malformed: the stream to the peer is
		// reset; the client is at fault (Classify: 400).
		u.Metrics.HTTP1Error(metrics.Outbound, metrics.SideClient, reason)
	}
	var cancelled bool
	if err, cancelled = proxyerr.Cause(x.R.Context(), s.cb, err); cancelled {
		// The client went away: nobody to answer.
		return pipeline.ErrCancelled
	}
	return proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
}

// fromPeer handles a peer proxy's response: one that says the peer's app
// never saw the request is retried elsewhere when it can be.
func (u *Stage) fromPeer(x *pipeline.Exchange, s *sending, ep balance.Endpoint, resp *http.Response) (*http.Response, error) {
	if _, ok := resp.Header[forward.HeaderUnprocessed]; ok {
		if s.canReplay() && u.retryUnprocessed(s.ctx, x, s, resp.Header.Get(forward.HeaderError)) {
			_ = resp.Body.Close()
			return nil, s.skipped(ep, proxyerr.FromUnprocessed(resp))
		}
		delete(resp.Header, forward.HeaderUnprocessed)
	}
	if pe := proxyerr.FromResponse(resp); pe != nil {
		// The peer's proxy answered itself: say so here too.
		u.Errors.Logf(x.Ctx, pe, "peer proxy answered with an error", "dst", x.Dest.Dst)
	}
	return resp, nil
}

func (u *Stage) retry(ctx context.Context, x *pipeline.Exchange, s *sending, err error) bool {
	if x.Dest.Balancer == nil || s.proven >= MaxRetries || ctx.Err() != nil {
		return false
	}
	s.proven++
	if !errors.Is(err, proxyerr.ErrConnect) && !IsDialError(err) {
		return false
	}
	u.Metrics.HTTP(x.Key).Retry(metrics.ReasonConnectError)
	u.Log.Debug("upstream: retrying on another endpoint", "dst", x.Dest.Dst, "err", err)
	return true
}

// retryUnprocessed decides whether a request the peer did not process is
// sent to another endpoint, and counts it.
func (u *Stage) retryUnprocessed(ctx context.Context, x *pipeline.Exchange, s *sending, why string) bool {
	if x.Dest.Balancer == nil || s.proven >= MaxRetries || ctx.Err() != nil {
		return false
	}
	s.proven++
	u.Metrics.HTTP(x.Key).Retry(metrics.ReasonUnprocessed)
	u.Log.Debug("upstream: peer did not process the request, retrying on another endpoint", "dst", x.Dest.Dst, "why", why)
	return true
}
