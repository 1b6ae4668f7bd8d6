package inbound

import (
	"net/http"
	"strings"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// chain is the inbound request pipeline, in the order a request meets its
// stages (see docs/architecture.md, "Request pipeline"): observe counts
// and answers once; tap reports requests to open taps (refusals
// included); mesh reads what the peer proxy said (the caller's
// protocol, the app's); authz decides the target (only the app's ports)
// and whether the caller may reach it (policy.Authorizer); the rate limit
// (proxy/ratelimit: a Server's RateLimit) comes after authz, so that a
// caller that may not reach the app cannot use up a budget; app sends the
// request to the app and writes its response.
func (p *Proxy) chain() http.Handler {
	return &pipeline.Observe{
		Direction: metrics.Inbound, Metrics: p.m, Errors: p.errs, Begin: p.begin,
		Next: pipeline.Chain(p.app,
			p.cfg.Tap,
			pipeline.Optional(p.cfg.Trace), // tracing (proxy/trace)
			p.mesh,
			p.authz,
			pipeline.Optional(p.cfg.RateLimit), // rate and concurrency limits (proxy/ratelimit)
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
		ip := clientIP(x.Conn.Raw)
		var err error
		if !x.Conn.TLS {
			err = p.callerRefusal(x.R.Context(), policy.Caller{ClientIP: ip, Port: forward.PortOf(x.AppAddr)}, x.R, x.Conn.TargetErr)
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
			c := policy.Caller{Identity: x.Conn.Peer, TLS: true, ClientIP: ip, Port: forward.PortOf(x.AppAddr)}
			err = p.callerRefusal(x.R.Context(), c, x.R, nil)
		}
		if err != nil {
			return p.refusedHTTP(x, err)
		}
		return next.Serve(x)
	})
}
