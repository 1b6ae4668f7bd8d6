package outbound

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// openStream opens an opaque stream for a route, retrying endpoints that
// cannot be connected to. The returned key labels the stream's metrics.
func (p *Proxy) openStream(ctx context.Context, rt route, defPort uint16) (net.Conn, metrics.Key, *proxyerr.Error) {
	var skip map[string]bool
	var last *proxyerr.Error // why the last endpoint tried was skipped
	for attempt := 0; ; attempt++ {
		var ep balance.Endpoint
		var pick *balance.Pick
		if rt.bal != nil {
			var err error
			pick, err = rt.bal.Pick(skip)
			if err != nil {
				key := metrics.Key{Direction: metrics.Outbound, DstService: rt.dst}
				if attempt > 0 {
					return nil, key, proxyerr.GaveUp(rt.dst, last)
				}
				return nil, key, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "no endpoints for "+rt.dst)
			}
			ep = pick.Endpoint
		} else {
			ep = balance.Endpoint{Addr: rt.addr}
		}
		key := metrics.Key{Direction: metrics.Outbound, DstService: rt.dst, PeerIdentity: p.idString(ep.Identity), TLS: !ep.Identity.IsZero()}
		port := uint16(ep.TargetPort)
		if port == 0 {
			port = addrPort(ep.Addr, defPort)
		}
		t0 := time.Now()
		c, err := p.dialer.opaque(ctx, ep.Addr, ep.Identity, port, rt.dst)
		if pick != nil {
			pick.Done(time.Since(t0), err != nil)
		}
		if err == nil {
			return c, key, nil
		}
		if rt.bal != nil && attempt < maxRetries && ctx.Err() == nil {
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
func (p *Proxy) opaqueTransparent(c net.Conn, info *connInfo) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout+5*time.Second)
	rt, f := p.resolveOrig(ctx, info)
	if f != nil {
		cancel()
		p.log.Debug("outbound: opaque stream refused", "dst", info.orig.String(), "err", f.Msg)
		return
	}
	peer, key, f := p.openStream(ctx, rt, info.orig.Port())
	cancel()
	if f != nil {
		p.log.Debug("outbound: opaque stream failed", "dst", rt.dst, "err", f.Msg)
		return
	}
	_ = p.splice(forward.WithCloseWrite(c, info.raw), peer, key)
}

// serveConnect gives explicit-mode apps opaque TCP: CONNECT host:port, then
// raw bytes over the mesh transport.
func (p *Proxy) serveConnect(w http.ResponseWriter, r *http.Request, authority string, info *connInfo, start time.Time) {
	hj, ok := w.(http.Hijacker)
	if r.ProtoMajor != 1 || !ok {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: authority}, proxyerr.New(http.StatusMethodNotAllowed, metrics.ReasonBadRequest, "CONNECT is supported over HTTP/1.1 only"), start)
		return
	}
	if !hasPort(r.Host) {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: authority}, proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "CONNECT needs host:port"), start)
		return
	}
	rt, f := p.resolve(r.Context(), authority, info)
	if f != nil {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: authority}, f, start)
		return
	}
	peer, key, f := p.openStream(r.Context(), rt, addrPort(authority, 0))
	if f != nil {
		p.answer(w, key, f, start)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = peer.Close()
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = peer.Close()
		return
	}
	if !forward.FlushBuffered(brw, peer) {
		_ = peer.Close()
		return
	}
	_ = p.splice(forward.WithCloseWrite(c, info.raw), peer, key)
}

// serveUpgrade carries an HTTP/1 Upgrade (WebSocket) request as an opaque
// stream: the request is written to the endpoint as is, then bytes flow both
// ways.
func (p *Proxy) serveUpgrade(w http.ResponseWriter, r *http.Request, rt route, info *connInfo, start time.Time) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		p.answer(w, metrics.Key{Direction: metrics.Outbound, DstService: rt.dst}, proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "upgrade not possible on this connection"), start)
		return
	}
	defPort := uint16(80)
	if info.orig.IsValid() {
		defPort = info.orig.Port()
	}
	peer, key, f := p.openStream(r.Context(), rt, defPort)
	if f != nil {
		p.answer(w, key, f, start)
		return
	}
	hm := p.m.HTTP(key)
	hm.Requests.Inc()
	forward.StripMesh(r.Header)
	resp, br, err := forward.SendUpgrade(r.Context(), peer, r)
	if err != nil {
		_ = peer.Close()
		p.errs.Answer(r.Context(), w, hm, proxyerr.Classify(r.Context(), err, proxyerr.ToPeer, rt.dst), start, "dst", rt.dst)
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		// Declined: an ordinary answer; the app's connection stays HTTP.
		cancelled, err := forward.RelayDeclined(r.Context(), w, peer, resp)
		hm.Relayed(resp.StatusCode, "", err != nil, cancelled, start)
		if err != nil && !cancelled {
			panic(http.ErrAbortHandler)
		}
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		_ = peer.Close()
		hm.Response(0, "", true)
		return
	}
	defer c.Close()
	if !forward.FlushBuffered(brw, peer) || forward.WriteSwitching(c, resp, br) != nil {
		_ = peer.Close()
		hm.Response(0, "", true)
		return
	}
	err = p.splice(forward.WithCloseWrite(c, info.raw), peer, key)
	hm.Response(http.StatusSwitchingProtocols, "", err != nil)
	hm.Latency.Observe(time.Since(start).Seconds())
}
