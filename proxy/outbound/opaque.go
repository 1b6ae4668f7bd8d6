package outbound

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/tunnel"
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
			port = tunnel.AddrPort(ep.Addr, defPort)
		}
		t0 := time.Now()
		c, err := p.dialer.opaque(ctx, ep.Addr, ep.Identity, ep.ServerName, port, rt.Dst)
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
