// Package tunnel holds the outbound stages where a request leaves HTTP
// and becomes a byte stream over the mesh transport: CONNECT (before
// routing: it names its own destination) and an HTTP/1 Upgrade such as
// WebSocket (once routed). The streams are opened and carried by the
// proxy (Stage.Open, Stage.Splice) and counted as TCP; a refused one is an
// HTTP answer like any other.
package tunnel

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/route"
)

// Stage is the tunnel stages' configuration.
type Stage struct {
	// Route resolves a CONNECT's authority.
	Route *route.Stage
	// Open opens an opaque stream to an endpoint of d (balanced, retried
	// on another endpoint when one cannot be connected to); defPort is the
	// port to name when the endpoint has none. The key labels its metrics.
	Open func(ctx context.Context, d pipeline.Dest, defPort uint16) (net.Conn, metrics.Key, *proxyerr.Error)
	// Splice carries bytes both ways between the app's connection and
	// the stream, recording TCP metrics under key.
	Splice func(app, peer net.Conn, key metrics.Key) error
}

// AddrPort is the port of addr ("host:port"), or def.
func AddrPort(addr string, def uint16) uint16 {
	_, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return def
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || n == 0 {
		return def
	}
	return uint16(n)
}

// Connect is the stage that gives explicit-mode apps opaque TCP: CONNECT
// host:port, then raw bytes over the mesh transport. A CONNECT tunnel is
// counted as TCP, not as an HTTP request, unless it is refused.
func (s *Stage) Connect(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		r := x.R
		if r.Method != http.MethodConnect {
			return next.Serve(x)
		}
		x.Authority = s.Route.Authority(r, &x.Conn)
		x.Key.DstService, x.LogVal = x.Authority, x.Authority
		hj, ok := x.W.(http.Hijacker)
		if r.ProtoMajor != 1 || !ok {
			return proxyerr.New(http.StatusMethodNotAllowed, metrics.ReasonBadRequest, "CONNECT is supported over HTTP/1.1 only")
		}
		if !route.HasPort(r.Host) {
			return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "CONNECT needs host:port")
		}
		if f := s.Route.Lookup(x); f != nil {
			return f
		}
		peer, key, f := s.Open(r.Context(), x.Dest, AddrPort(x.Authority, 0))
		if f != nil {
			x.Key = key
			return f
		}
		c, brw, err := hj.Hijack()
		if err != nil {
			_ = peer.Close()
			return nil
		}
		defer c.Close()
		if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
			_ = peer.Close()
			return nil
		}
		if !forward.FlushBuffered(brw, peer) {
			_ = peer.Close()
			return nil
		}
		_ = s.Splice(forward.WithCloseWrite(c, x.Conn.Raw), peer, key)
		return nil
	})
}

// Upgrade is the stage that carries an HTTP/1 Upgrade (WebSocket) request
// as an opaque stream: the request is written to the endpoint as is, then
// bytes flow both ways.
func (s *Stage) Upgrade(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		r := x.R
		if r.ProtoMajor != 1 || !forward.IsUpgrade(r.Header) {
			return next.Serve(x)
		}
		hj, ok := x.W.(http.Hijacker)
		if !ok {
			return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection")
		}
		defPort := uint16(80)
		if x.Conn.Orig.IsValid() {
			defPort = x.Conn.Orig.Port()
		}
		peer, key, f := s.Open(r.Context(), x.Dest, defPort)
		x.Key = key
		if f != nil {
			return f
		}
		x.Metrics()
		forward.StripMesh(r.Header)
		resp, br, err := forward.SendUpgrade(r.Context(), peer, r)
		if err != nil {
			_ = peer.Close()
			return proxyerr.Classify(r.Context(), err, proxyerr.ToPeer, x.Dest.Dst)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			// Declined: an ordinary answer, and the caller's connection
			// stays HTTP, parsed request by request.
			x.Wrote(resp.StatusCode, "", forward.RelayDeclined(r.Context(), x.W, peer, resp))
			return nil
		}
		return s.tunnel(x, hj, peer, key, resp, br)
	})
}

// tunnel hands the client's connection over to a stream to peer, once
// peer's 101 answer (and what came after it) is relayed.
func (s *Stage) tunnel(x *pipeline.Exchange, hj http.Hijacker, peer net.Conn, key metrics.Key, resp *http.Response, br *bufio.Reader) error {
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = peer.Close()
		x.Tunnelled(0, err)
		return nil
	}
	defer c.Close()
	if !forward.FlushBuffered(brw, peer) || forward.WriteSwitching(c, resp, br) != nil {
		_ = peer.Close()
		x.Tunnelled(0, net.ErrClosed)
		return nil
	}
	err = s.Splice(forward.WithCloseWrite(c, x.Conn.Raw), peer, key)
	x.Tunnelled(http.StatusSwitchingProtocols, err)
	return nil
}
