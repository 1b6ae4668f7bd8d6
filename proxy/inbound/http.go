//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

package inbound

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
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
	if info.tls {
		if v := hdr[forward.HeaderOrigProto]; len(v) > 0 && strings.HasPrefix(v[0], "HTTP/1") {
			h1 = true
		}
		forward.RestoreExpect(hdr)
		if v := hdr[forward.HeaderTargetPort]; len(v) > 0 {
			port, err := forward.ParseTargetPort(v[0])
			if err != nil {
				p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, err.Error(), start)
				return
			}
			if !p.isOwnPort(port) {
				target = p.portAddr(port)
			}
		}
	}
	forward.StripMesh(hdr)
	if r.ProtoMajor == 1 && forward.IsUpgrade(hdr) {
		p.serveUpgrade(w, r, info, target, hm, start)
		return
	}
	forward.RemoveHopByHop(hdr)
	if r.ContentLength == 0 {
		r.Body = http.NoBody
	}

	var resp *http.Response
	var err error
	if h1 {
		// The HTTP/1 client writes the request as it is (method, URI, Host,
		// headers, body, trailers) in this goroutine: no copy needed.
		resp, err = p.h1.RoundTrip(r, target)
	} else {
		out := r.WithContext(r.Context())
		u := new(url.URL)
		*u = *r.URL
		u.Scheme, u.Host = "http", target
		out.URL = u
		out.RequestURI = ""
		out.Close = false
		resp, err = p.h2c.RoundTrip(out)
	}
	if err != nil {
		if r.Context().Err() != nil {
			hm.Response(0, "", true)
			hm.Latency.Observe(time.Since(start).Seconds())
			return
		}
		if reason, ok := forward.RequestBodyFault(err); ok {
			p.m.ProtocolError(metrics.Inbound, metrics.SideClient, reason)
			p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, "request body: "+err.Error(), start)
			return
		}
		if reason, ok := forward.AppFault(err); ok {
			p.m.ProtocolError(metrics.Inbound, metrics.SideApp, reason)
			p.fail(w, hm, http.StatusBadGateway, "", "app "+target+" sent a malformed response: "+err.Error(), start)
			return
		}
		if isDial(err) {
			// Nothing was sent: the app is not listening (it is exiting,
			// or not started yet). Tell a mesh peer so, and it sends the
			// request to another endpoint instead of failing it.
			if info.tls {
				w.Header()[forward.HeaderUnprocessed] = unprocessedValue
			}
			p.fail(w, hm, http.StatusBadGateway, metrics.ReasonConnectError, "connecting to app "+target+": "+err.Error(), start)
			return
		}
		p.fail(w, hm, http.StatusBadGateway, "", "app "+target+": "+err.Error(), start)
		return
	}
	// Only this proxy may say a request was not processed.
	delete(resp.Header, forward.HeaderUnprocessed)
	_, err = forward.WriteResponse(w, resp)
	_ = resp.Body.Close()
	hm.Response(resp.StatusCode, grpcStatus(resp), err != nil)
	hm.Latency.Observe(time.Since(start).Seconds())
	if err != nil {
		if reason, ok := forward.AppFault(err); ok {
			// A malformed chunk from the app: its connection is closed,
			// the client's stream aborted.
			p.m.ProtocolError(metrics.Inbound, metrics.SideApp, reason)
		}
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
	if reason != "" {
		hm.RequestError(reason)
	}
	h := w.Header()
	h["Trellis-Error"] = []string{msg}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(msg) + 1)}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, msg+"\n")
	hm.Response(status, "", false)
	hm.Latency.Observe(time.Since(start).Seconds())
}

// serveUpgrade passes an HTTP/1 Upgrade request from a plain caller to the
// app and then splices bytes both ways.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, info *connInfo, target string, hm *metrics.HTTP, start time.Time) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		p.fail(w, hm, http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection", start)
		return
	}
	app, err := p.dialer.DialContext(r.Context(), "tcp", target)
	if err != nil {
		p.fail(w, hm, http.StatusBadGateway, metrics.ReasonConnectError, "connecting to app "+target+": "+err.Error(), start)
		return
	}
	if err := r.Write(app); err != nil {
		_ = app.Close()
		p.fail(w, hm, http.StatusBadGateway, "", "writing upgrade request: "+err.Error(), start)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = app.Close()
		hm.Response(0, "", true)
		return
	}
	defer c.Close()
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := app.Write(b); err != nil {
			_ = app.Close()
			hm.Response(0, "", true)
			return
		}
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
