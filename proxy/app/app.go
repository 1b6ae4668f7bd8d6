// Package app is the last inbound stage: it sends a request to the
// application (HTTP/1.1, restored for a caller that spoke it, or
// prior-knowledge HTTP/2, as the app's service port declares), writes the
// app's response, and carries an HTTP/1 Upgrade as a byte stream. A
// request that never reached the app (nothing listening) is marked
// trellis-unprocessed for a mesh peer, which sends it elsewhere.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Stage is the app stage.
type Stage struct {
	Metrics *metrics.Metrics
	// H1 speaks HTTP/1.1 to the app, writing the request as it came.
	H1 *forward.H1Client
	// H2 gives a prior-knowledge HTTP/2 connection to the app at addr
	// with a stream reserved for one RoundTrip (an h2pool.Pool's Get).
	H2 func(ctx context.Context, addr string) (http.RoundTripper, error)
	// Dial connects to the app (an Upgrade's stream).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Serve is the last inbound stage: it sends the request to the app (HTTP/1.1 or
// prior-knowledge HTTP/2, as the app speaks) and writes its response.
func (a *Stage) Serve(x *pipeline.Exchange) error {
	r, hdr := x.R, x.R.Header
	forward.StripMesh(hdr)
	if r.ProtoMajor == 1 && forward.IsUpgrade(hdr) && dropH2CUpgrade(hdr) {
		return a.serveUpgrade(x)
	}
	forward.RemoveHopByHop(hdr)
	forward.KeepRequestAbsent(hdr)
	// The app's protocol, when the control plane knows it; else the caller's.
	h1, err := forward.ToApp(forward.CallerOf(hdr, x.CallerH1), x.AppProto)
	if err != nil {
		return proxyerr.New(http.StatusBadGateway, metrics.ReasonProtocolMismatch, err.Error())
	}
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	}
	// Whoever reads the body, its read errors are the client's fault. Only
	// the outgoing request gets the wrapper: net/http decides from the type
	// of its own request's body how to finish the exchange.
	var cb *proxyerr.Body
	if r.Body != nil && r.Body != http.NoBody {
		cb = proxyerr.ClientBody(r.Body)
	}
	resp, err := a.roundTrip(r, cb, h1, x.AppAddr)
	if err != nil {
		return a.failed(x, cb, err)
	}
	// Only this proxy may say a request was not processed, or answered
	// with an error of its own.
	delete(resp.Header, forward.HeaderUnprocessed)
	delete(resp.Header, proxyerr.HeaderProxyError)
	_, err = forward.WriteResponse(x.W, resp)
	_ = resp.Body.Close()
	if err != nil {
		// A malformed chunk from the app: its connection is closed, the
		// client's stream aborted.
		a.countFraming(err)
	}
	x.Wrote(resp.StatusCode, pipeline.GRPCStatus(resp), err)
	return nil
}

// roundTrip sends r to the app at target, its body marked as cb.
func (a *Stage) roundTrip(r *http.Request, cb *proxyerr.Body, h1 bool, target string) (*http.Response, error) {
	if h1 {
		// The HTTP/1 client writes the request as it is (method, URI, Host,
		// headers, body, trailers) in this goroutine; a copy only to
		// carry the marked body.
		req := r
		if cb != nil {
			req = r.WithContext(r.Context())
			req.Body = cb
		}
		return a.H1.RoundTrip(req, target)
	}
	out := r.WithContext(r.Context())
	u := new(url.URL)
	*u = *r.URL
	u.Scheme, u.Host = "http", target
	out.URL = u
	out.RequestURI = ""
	out.Close = false
	if cb != nil {
		out.Body = cb
	}
	return a.roundTripH2(out, target)
}

// roundTripH2 sends a request to the app over HTTP/2. A stream the app
// provably did not process (REFUSED_STREAM, or above its GOAWAY's last
// stream: a gRPC server's graceful stop) is sent once more when it has no
// body: on a new connection after a GOAWAY, on the same one after
// REFUSED_STREAM. A body is the caller's stream, read once, so such a
// request fails as refused and failed tells a mesh peer, which holds the
// body, to send it elsewhere.
func (a *Stage) roundTripH2(out *http.Request, target string) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		rt, err := a.H2(out.Context(), target)
		if err != nil {
			return nil, err
		}
		resp, err := rt.RoundTrip(out)
		if err == nil || !errors.Is(err, meshh2.ErrUnprocessed) {
			return resp, err
		}
		if out.Body != nil && out.Body != http.NoBody || attempt > 0 {
			return nil, fmt.Errorf("%w: %w", errAppRefused, err)
		}
	}
}

// errAppRefused: the app refused an HTTP/2 stream it provably did not process.
var errAppRefused = errors.New("the app refused the stream unprocessed (it is shutting down)")

// appFailed is the answer to a request the app did not answer.
func (a *Stage) failed(x *pipeline.Exchange, cb *proxyerr.Body, err error) error {
	var cancelled bool
	if err, cancelled = proxyerr.Cause(x.R.Context(), cb, err); cancelled {
		// The caller reset or abandoned the stream.
		return pipeline.ErrCancelled
	}
	a.countFraming(err)
	refused := errors.Is(err, errAppRefused)
	var e *proxyerr.Error
	if refused {
		e = proxyerr.New(http.StatusServiceUnavailable, proxyerr.ReasonAppUnreachable, "app "+x.AppAddr+": "+err.Error())
	} else {
		e = proxyerr.Classify(x.R.Context(), err, proxyerr.ToApp, x.AppAddr)
	}
	if x.Conn.TLS && (refused || e.Reason == proxyerr.ReasonAppUnreachable && isDial(err)) {
		// The app did not get the request: it is not listening (it is
		// exiting, or not started yet) or refused the stream. Tell a
		// mesh peer so, and it sends the request to another endpoint
		// instead of failing it.
		x.W.Header()[forward.HeaderUnprocessed] = unprocessedValue
	}
	return e
}

var unprocessedValue = []string{"app-unreachable"}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// serveUpgrade passes an HTTP/1 Upgrade request from a plain caller to the
// app and then splices bytes both ways.
func (a *Stage) serveUpgrade(x *pipeline.Exchange) error {
	r := x.R
	hj, ok := x.W.(http.Hijacker)
	if !ok {
		return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection")
	}
	conn, err := a.Dial(r.Context(), "tcp", x.AppAddr)
	if err != nil {
		return proxyerr.Classify(r.Context(), err, proxyerr.ToApp, x.AppAddr)
	}
	resp, br, err := forward.SendUpgrade(r.Context(), conn, r)
	if err != nil {
		_ = conn.Close()
		a.countFraming(err)
		return proxyerr.Classify(r.Context(), err, proxyerr.ToApp, x.AppAddr)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The app declined: an ordinary answer, and the caller's
		// connection stays HTTP, parsed request by request.
		delete(resp.Header, forward.HeaderUnprocessed)
		delete(resp.Header, proxyerr.HeaderProxyError)
		err := forward.RelayDeclined(r.Context(), x.W, conn, resp)
		if err != nil {
			a.countFraming(err)
		}
		x.Wrote(resp.StatusCode, "", err)
		return nil
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = conn.Close()
		x.Tunnelled(0, err)
		return nil
	}
	defer c.Close()
	if !forward.FlushBuffered(brw, conn) || forward.WriteSwitching(c, resp, br) != nil {
		_ = conn.Close()
		x.Tunnelled(0, net.ErrClosed)
		return nil
	}
	tm := a.Metrics.TCP(metrics.Key{Direction: metrics.Inbound, DstService: r.Host, PeerIdentity: x.Conn.Peer, TLS: x.Conn.TLS})
	tm.Open()
	fromPeer, toPeer, err := forward.Splice(forward.WithCloseWrite(c, x.Conn.Raw), conn)
	tm.Read(fromPeer)
	tm.Write(toPeer)
	tm.Close(forward.Errno(err))
	x.Tunnelled(http.StatusSwitchingProtocols, err)
	return nil
}

// countFraming counts a malformed HTTP/1 body from the client or response
// from the app in trellis_http1_protocol_errors_total; the answer itself
// comes from proxyerr.Classify.
func (a *Stage) countFraming(err error) {
	if reason, ok := forward.RequestBodyFault(err); ok {
		a.Metrics.HTTP1Error(metrics.Inbound, metrics.SideClient, reason)
	} else if reason, ok := forward.AppFault(err); ok {
		a.Metrics.HTTP1Error(metrics.Inbound, metrics.SideApp, reason)
	}
}
