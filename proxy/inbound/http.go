//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

package inbound

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// serveHTTP forwards one request to the app.
func (p *Proxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	info, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil {
		info = &connInfo{target: p.cfg.AppAddr}
	}
	key := metrics.Key{Direction: metrics.Inbound, DstService: r.Host, PeerIdentity: info.peer, TLS: info.tls}
	hm := p.m.HTTP(key)
	hm.Requests.Inc()

	hdr := r.Header
	// Mesh headers are honoured only from mesh peers, then removed.
	h1 := r.ProtoMajor == 1
	target := info.target
	hint := forward.AppProtoUnknown
	if !info.tls {
		if err := p.plainRefusal(info); err != nil {
			p.refusedHTTP(w, hm, info, err, start)
			return
		}
	}
	if info.tls {
		if v := hdr[forward.HeaderOrigProto]; len(v) > 0 && strings.HasPrefix(v[0], "HTTP/1") {
			h1 = true
		}
		if v, ok := hdr[forward.HeaderAppProto]; ok {
			var err error
			if hint, err = forward.ParseAppProto(v); err != nil {
				p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, err.Error(), start)
				return
			}
		}
		forward.RestoreExpect(hdr)
		if v := hdr[forward.HeaderTargetPort]; len(v) > 0 {
			port, err := forward.ParseTargetPort(v[0])
			if err != nil {
				p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, err.Error(), start)
				return
			}
			if target, err = p.targets.forPort(port); err != nil {
				p.refusedHTTP(w, hm, info, err, start)
				return
			}
		} else if info.targetErr != nil {
			p.refusedHTTP(w, hm, info, info.targetErr, start)
			return
		}
	}
	forward.StripMesh(hdr)
	if r.ProtoMajor == 1 && forward.IsUpgrade(hdr) {
		p.serveUpgrade(w, r, info, target, hm, start)
		return
	}
	forward.RemoveHopByHop(hdr)
	forward.KeepRequestAbsent(hdr)
	// The app's protocol, when the control plane knows it; else the caller's.
	h1, err := forward.ToApp(forward.CallerOf(hdr, h1), hint)
	if err != nil {
		p.fail(w, hm, http.StatusBadGateway, metrics.ReasonProtocolMismatch, err.Error(), start)
		return
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

	var resp *http.Response
	if h1 {
		// The HTTP/1 client writes the request as it is (method, URI, Host,
		// headers, body, trailers) in this goroutine; a copy only to
		// carry the marked body.
		req := r
		if cb != nil {
			req = r.WithContext(r.Context())
			req.Body = cb
		}
		resp, err = p.h1.RoundTrip(req, target)
	} else {
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
		resp, err = p.h2c.RoundTrip(out)
	}
	if err != nil {
		var cancelled bool
		if err, cancelled = proxyerr.Cause(r.Context(), cb, err); cancelled {
			// The caller reset or abandoned the stream.
			hm.Cancelled(0)
			return
		}
		p.countFraming(err)
		e := proxyerr.Classify(r.Context(), err, proxyerr.ToApp, target)
		if e.Reason == proxyerr.ReasonAppUnreachable && isDial(err) && info.tls {
			// Nothing was sent: the app is not listening (it is exiting,
			// or not started yet). Tell a mesh peer so, and it sends the
			// request to another endpoint instead of failing it.
			w.Header()[forward.HeaderUnprocessed] = unprocessedValue
		}
		p.errs.Answer(r.Context(), w, hm, e, start, "peer", info.peer)
		return
	}
	// Only this proxy may say a request was not processed, or answered
	// with an error of its own.
	delete(resp.Header, forward.HeaderUnprocessed)
	delete(resp.Header, proxyerr.HeaderProxyError)
	_, err = forward.WriteResponse(w, resp)
	_ = resp.Body.Close()
	if err != nil && r.Context().Err() != nil {
		// The caller reset or abandoned the stream: not the app's failure.
		hm.Cancelled(resp.StatusCode)
	} else {
		hm.Response(resp.StatusCode, grpcStatus(resp), err != nil)
		hm.Latency.Observe(time.Since(start).Seconds())
	}
	if err != nil {
		// A malformed chunk from the app: its connection is closed, the
		// client's stream aborted.
		p.countFraming(err)
		panic(http.ErrAbortHandler)
	}
}

var unprocessedValue = []string{"app-unreachable"}

func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func grpcStatus(resp *http.Response) string {
	ct := resp.Header["Content-Type"]
	if len(ct) == 0 || !forward.IsGRPC(ct[0]) {
		return ""
	}
	if v := resp.Trailer["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (p *Proxy) fail(w http.ResponseWriter, hm *metrics.HTTP, status int, reason, msg string, start time.Time) {
	p.errs.Answer(context.Background(), w, hm, proxyerr.New(status, reason, msg), start)
}

// serveUpgrade passes an HTTP/1 Upgrade request from a plain caller to the
// app and then splices bytes both ways.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, info *connInfo, target string, hm *metrics.HTTP, start time.Time) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection", start)
		return
	}
	app, err := p.dialApp(r.Context(), "tcp", target)
	if err != nil {
		p.errs.Answer(r.Context(), w, hm, proxyerr.Classify(r.Context(), err, proxyerr.ToApp, target), start, "peer", info.peer)
		return
	}
	resp, br, err := forward.SendUpgrade(r.Context(), app, r)
	if err != nil {
		_ = app.Close()
		p.countFraming(err)
		p.errs.Answer(r.Context(), w, hm, proxyerr.Classify(r.Context(), err, proxyerr.ToApp, target), start, "peer", info.peer)
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// The app declined: an ordinary answer, and the caller's
		// connection stays HTTP, parsed request by request.
		delete(resp.Header, forward.HeaderUnprocessed)
		delete(resp.Header, proxyerr.HeaderProxyError)
		cancelled, err := forward.RelayDeclined(r.Context(), w, app, resp)
		hm.Relayed(resp.StatusCode, "", err != nil, cancelled, start)
		if err != nil && !cancelled {
			p.countFraming(err)
			panic(http.ErrAbortHandler)
		}
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = app.Close()
		hm.Response(0, "", true)
		return
	}
	defer c.Close()
	if !forward.FlushBuffered(brw, app) || forward.WriteSwitching(c, resp, br) != nil {
		_ = app.Close()
		hm.Response(0, "", true)
		return
	}
	tm := p.m.TCP(metrics.Key{Direction: metrics.Inbound, DstService: r.Host, PeerIdentity: info.peer, TLS: info.tls})
	tm.Open()
	fromPeer, toPeer, err := forward.Splice(forward.WithCloseWrite(c, info.raw), app)
	tm.Read(fromPeer)
	tm.Write(toPeer)
	tm.Close(forward.Errno(err))
	hm.Response(http.StatusSwitchingProtocols, "", err != nil)
	hm.Latency.Observe(time.Since(start).Seconds())
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
