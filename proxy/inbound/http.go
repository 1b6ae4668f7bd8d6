//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

package inbound

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// chain is the inbound request pipeline, in the order a request meets its
// stages (see docs/architecture.md, "Request pipeline"): observe counts
// and answers once; mesh reads what the peer proxy said (the caller's
// protocol, the app's); authz decides the target (only the app's ports)
// and whether the caller may reach it (policy.Authorizer); rate limiting
// has its place (Identity until it exists); app sends the request to the
// app and writes its response.
func (p *Proxy) chain() http.Handler {
	return &pipeline.Observe{
		Direction: metrics.Inbound, Metrics: p.m, Errors: p.errs, Begin: p.begin,
		Next: pipeline.Chain(pipeline.HandlerFunc(p.app),
			p.mesh,
			p.authz,
			pipeline.Identity, // rate limits
		),
	}
}

// begin labels a request with its caller; the key is final, so it is
// counted at once.
func (p *Proxy) begin(x *pipeline.Exchange) {
	info, _ := x.R.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil {
		info = &connInfo{target: p.cfg.AppAddr}
	}
	x.Conn = pipeline.Conn{Raw: info.raw, Peer: info.peer, TLS: info.tls, Target: info.target, TargetErr: info.targetErr}
	x.Key = metrics.Key{Direction: metrics.Inbound, DstService: x.R.Host, PeerIdentity: info.peer, TLS: info.tls}
	x.LogKey, x.LogVal = "peer", info.peer
	x.CallerH1 = x.R.ProtoMajor == 1
	x.Metrics()
}

// mesh is the stage that reads the mesh headers a peer proxy sent (only
// from mesh peers): the caller's HTTP version, the app's protocol and a
// carried Expect.
func (p *Proxy) mesh(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if !x.Conn.TLS {
			return next.Serve(x)
		}
		hdr := x.R.Header
		if v := hdr[forward.HeaderOrigProto]; len(v) > 0 && strings.HasPrefix(v[0], "HTTP/1") {
			x.CallerH1 = true
		}
		if v, ok := hdr[forward.HeaderAppProto]; ok {
			var err error
			if x.AppProto, err = forward.ParseAppProto(v); err != nil {
				return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, err.Error())
			}
		}
		forward.RestoreExpect(hdr)
		return next.Serve(x)
	})
}

// authz is the stage that decides where a request goes (the default
// target, or the port a mesh peer named: only the app's) and whether its
// caller may send it there. A refusal is a 403 naming the reason.
func (p *Proxy) authz(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		x.AppAddr = x.Conn.Target
		var err error
		if !x.Conn.TLS {
			err = p.callerRefusal(x.R.Context(), policy.Caller{}, x.R, x.Conn.TargetErr)
		} else if v := x.R.Header[forward.HeaderTargetPort]; len(v) > 0 {
			port, perr := forward.ParseTargetPort(v[0])
			if perr != nil {
				return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, perr.Error())
			}
			x.AppAddr, err = p.targets.forPort(port)
		} else {
			err = x.Conn.TargetErr
		}
		if err == nil && x.Conn.TLS {
			err = p.callerRefusal(x.R.Context(), policy.Caller{Identity: x.Conn.Peer, TLS: true}, x.R, nil)
		}
		if err != nil {
			return p.refusedHTTP(x, err)
		}
		return next.Serve(x)
	})
}

// app is the last stage: it sends the request to the app (HTTP/1.1 or
// prior-knowledge HTTP/2, as the app speaks) and writes its response.
func (p *Proxy) app(x *pipeline.Exchange) error {
	r, hdr := x.R, x.R.Header
	forward.StripMesh(hdr)
	if r.ProtoMajor == 1 && forward.IsUpgrade(hdr) {
		return p.serveUpgrade(x)
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
	resp, err := p.roundTrip(r, cb, h1, x.AppAddr)
	if err != nil {
		return p.appFailed(x, cb, err)
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
		p.countFraming(err)
	}
	x.Wrote(resp.StatusCode, pipeline.GRPCStatus(resp), err)
	return nil
}

// roundTrip sends r to the app at target, its body marked as cb.
func (p *Proxy) roundTrip(r *http.Request, cb *proxyerr.Body, h1 bool, target string) (*http.Response, error) {
	if h1 {
		// The HTTP/1 client writes the request as it is (method, URI, Host,
		// headers, body, trailers) in this goroutine; a copy only to
		// carry the marked body.
		req := r
		if cb != nil {
			req = r.WithContext(r.Context())
			req.Body = cb
		}
		return p.h1.RoundTrip(req, target)
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
	return p.h2c.RoundTrip(out)
}

// appFailed is the answer to a request the app did not answer.
func (p *Proxy) appFailed(x *pipeline.Exchange, cb *proxyerr.Body, err error) error {
	var cancelled bool
	if err, cancelled = proxyerr.Cause(x.R.Context(), cb, err); cancelled {
		// The caller reset or abandoned the stream.
		return pipeline.ErrCancelled
	}
	p.countFraming(err)
	e := proxyerr.Classify(x.R.Context(), err, proxyerr.ToApp, x.AppAddr)
	if e.Reason == proxyerr.ReasonAppUnreachable && isDial(err) && x.Conn.TLS {
		// Nothing was sent: the app is not listening (it is exiting,
		// or not started yet). Tell a mesh peer so, and it sends the
		// request to another endpoint instead of failing it.
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
func (p *Proxy) serveUpgrade(x *pipeline.Exchange) error {
	r := x.R
	hj, ok := x.W.(http.Hijacker)
	if !ok {
		return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection")
	}
	app, err := p.dialApp(r.Context(), "tcp", x.AppAddr)
	if err != nil {
		return proxyerr.Classify(r.Context(), err, proxyerr.ToApp, x.AppAddr)
	}
	if err := r.Write(app); err != nil {
		_ = app.Close()
		return proxyerr.Classify(r.Context(), err, proxyerr.ToApp, x.AppAddr)
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = app.Close()
		x.Tunnelled(0, err)
		return nil
	}
	defer c.Close()
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := app.Write(b); err != nil {
			_ = app.Close()
			x.Tunnelled(0, err)
			return nil
		}
	}
	tm := p.m.TCP(metrics.Key{Direction: metrics.Inbound, DstService: r.Host, PeerIdentity: x.Conn.Peer, TLS: x.Conn.TLS})
	tm.Open()
	fromPeer, toPeer, err := forward.Splice(forward.WithCloseWrite(c, x.Conn.Raw), app)
	tm.Read(fromPeer)
	tm.Write(toPeer)
	tm.Close(forward.Errno(err))
	x.Tunnelled(http.StatusSwitchingProtocols, err)
	return nil
}

// countFraming counts a malformed HTTP/1 body from the client or response
// from the app in trellis_http1_protocol_errors_total; the answer itself
// comes from proxyerr.Classify.
func (p *Proxy) countFraming(err error) {
	if reason, ok := forward.RequestBodyFault(err); ok {
		p.m.HTTP1Error(metrics.Inbound, metrics.SideClient, reason)
	} else if reason, ok := forward.AppFault(err); ok {
		p.m.HTTP1Error(metrics.Inbound, metrics.SideApp, reason)
	}
}
