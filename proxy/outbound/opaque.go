package outbound

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/route"
	"github.com/trellis-mesh/trellis/proxy/upstream"
)

// openStream opens an opaque stream for a route, retrying endpoints that
// cannot be connected to. The returned key labels the stream's metrics.
func (p *Proxy) openStream(ctx context.Context, rt pipeline.Dest, defPort uint16) (net.Conn, metrics.Key, *proxyerr.Error) {
	var skip map[string]bool
	var last *proxyerr.Error // why the last endpoint tried was skipped
	for attempt := 0; ; attempt++ {
		var ep balance.Endpoint
		var pick *balance.Pick
		if rt.Balancer != nil {
			var err error
			pick, err = rt.Balancer.Pick(skip)
			if err != nil {
				key := metrics.Key{Direction: metrics.Outbound, DstService: rt.Dst}
				if attempt > 0 {
					return nil, key, proxyerr.GaveUp(rt.Dst, last)
				}
				return nil, key, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints for "+rt.Dst)
			}
			ep = pick.Endpoint
		} else {
			ep = balance.Endpoint{Addr: rt.Addr}
		}
		key := metrics.Key{Direction: metrics.Outbound, DstService: rt.Dst, PeerIdentity: idString(ep.Identity), TLS: !ep.Identity.IsZero()}
		port := uint16(ep.TargetPort)
		if port == 0 {
			port = addrPort(ep.Addr, defPort)
		}
		t0 := time.Now()
		c, err := p.dialer.opaque(ctx, ep.Addr, ep.Identity, port, rt.Dst)
		if pick != nil {
			pick.Done(time.Since(t0), err != nil)
		}
		if err == nil {
			return c, key, nil
		}
		if rt.Balancer != nil && attempt < upstream.MaxRetries && ctx.Err() == nil {
			last = proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
			if skip == nil {
				skip = make(map[string]bool, 2)
			}
			skip[ep.Addr] = true
			continue
		}
		return nil, key, proxyerr.Classify(ctx, err, proxyerr.ToPeer, ep.Addr)
	}
}

func addrPort(addr string, def uint16) uint16 {
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

// splice carries an opaque stream and records its TCP metrics. app is the
// app's side, peer the connection towards the endpoint.
func (p *Proxy) splice(app, peer net.Conn, key metrics.Key) error {
	tm := p.m.TCP(key)
	tm.Open()
	toPeer, fromPeer, err := forward.Splice(app, peer)
	tm.Write(toPeer)
	tm.Read(fromPeer)
	tm.Close(forward.Errno(err))
	return err
}

// opaqueTransparent forwards a raw TCP stream to its original destination,
// over the mesh when the control plane knows it.
func (p *Proxy) opaqueTransparent(c net.Conn, info *pipeline.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout+5*time.Second)
	rt, f := p.route.Orig(ctx, info.Orig.String())
	if f != nil {
		cancel()
		p.log.Debug("outbound: opaque stream refused", "dst", info.Orig.String(), "err", f.Msg)
		return
	}
	peer, key, f := p.openStream(ctx, rt, info.Orig.Port())
	cancel()
	if f != nil {
		p.log.Debug("outbound: opaque stream failed", "dst", rt.Dst, "err", f.Msg)
		return
	}
	_ = p.splice(forward.WithCloseWrite(c, info.Raw), peer, key)
}

// connect is the stage that gives explicit-mode apps opaque TCP: CONNECT
// host:port, then raw bytes over the mesh transport. A CONNECT tunnel is
// counted as TCP, not as an HTTP request, unless it is refused.
func (p *Proxy) connect(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		r := x.R
		if r.Method != http.MethodConnect {
			return next.Serve(x)
		}
		x.Authority = p.route.Authority(r, &x.Conn)
		x.Key.DstService, x.LogVal = x.Authority, x.Authority
		hj, ok := x.W.(http.Hijacker)
		if r.ProtoMajor != 1 || !ok {
			return proxyerr.New(http.StatusMethodNotAllowed, metrics.ReasonBadRequest, "CONNECT is supported over HTTP/1.1 only")
		}
		if !route.HasPort(r.Host) {
			return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "CONNECT needs host:port")
		}
		if f := p.route.Lookup(x); f != nil {
			return f
		}
		peer, key, f := p.openStream(r.Context(), x.Dest, addrPort(x.Authority, 0))
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
		if !flushBuffered(brw, peer) {
			_ = peer.Close()
			return nil
		}
		_ = p.splice(forward.WithCloseWrite(c, x.Conn.Raw), peer, key)
		return nil
	})
}

// upgrade is the stage that carries an HTTP/1 Upgrade (WebSocket) request
// as an opaque stream: the request is written to the endpoint as is, then
// bytes flow both ways.
func (p *Proxy) upgrade(next pipeline.Handler) pipeline.Handler {
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
		peer, key, f := p.openStream(r.Context(), x.Dest, defPort)
		x.Key = key
		if f != nil {
			return f
		}
		x.Metrics()
		forward.StripMesh(r.Header)
		if err := r.Write(peer); err != nil {
			_ = peer.Close()
			return proxyerr.Classify(r.Context(), err, proxyerr.ToPeer, x.Dest.Dst)
		}
		return p.tunnel(x, hj, peer, key)
	})
}

// tunnel hands the client's connection over to a stream to peer.
func (p *Proxy) tunnel(x *pipeline.Exchange, hj http.Hijacker, peer net.Conn, key metrics.Key) error {
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = peer.Close()
		x.Tunnelled(0, err)
		return nil
	}
	defer c.Close()
	if !flushBuffered(brw, peer) {
		_ = peer.Close()
		x.Tunnelled(0, net.ErrClosed)
		return nil
	}
	err = p.splice(forward.WithCloseWrite(c, x.Conn.Raw), peer, key)
	x.Tunnelled(http.StatusSwitchingProtocols, err)
	return nil
}

// flushBuffered sends bytes the HTTP server already read past the request.
func flushBuffered(brw *bufio.ReadWriter, dst net.Conn) bool {
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := dst.Write(b); err != nil {
			return false
		}
	}
	return true
}
