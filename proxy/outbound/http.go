package outbound

import (
	"context"
	"errors"
	"net/http"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/timeout"
)

// chain is the outbound request pipeline, in the order a request meets
// its stages (see docs/architecture.md, "Request pipeline"): observe
// counts and answers once; tap reports requests to open taps (it skips
// CONNECT and Upgrade, and learns the route and endpoint from the stages
// after it); CONNECT leaves HTTP before routing; route
// names the destination; an Upgrade leaves HTTP once routed; the timeout
// bounds what follows (the route's timeout, else the default); fault
// injection delays or aborts what a route says; mirroring sends a route's
// copies aside; upstream picks, sends and retries.
func (p *Proxy) chain() http.Handler {
	return &pipeline.Observe{
		Direction: metrics.Outbound, Metrics: p.m, Errors: p.errs,
		Begin: func(x *pipeline.Exchange) { x.LogKey = "dst" },
		Next: pipeline.Chain(p.upstream,
			p.cfg.Tap,
			pipeline.Optional(p.cfg.Trace), // tracing (proxy/trace)
			p.tunnel.Connect,
			p.route.Layer,
			p.tunnel.Upgrade,
			timeout.Layer(p.cfg.RequestTimeout),
			p.fault.Layer,
			p.mirror.Layer,
		),
	}
}

// ServeHTTP routes one request from the app.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// resolveDst adapts Config.Resolve to the route stage.
func (p *Proxy) resolveDst(ctx context.Context, authority string) (bool, *balance.Balancer, error) {
	d, err := p.cfg.Resolve(ctx, authority)
	return d.Exists, d.Balancer, err
}

func idString(id identity.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// meshConn is the upstream stage's connection to an endpoint over HTTP/2:
// the per-peer pool, whichever mesh transport it holds.
func (p *Proxy) meshConn(ctx context.Context, ep balance.Endpoint) (http.RoundTripper, error) {
	return p.pool.Get(ctx, poolKey{addr: ep.Addr, id: ep.Identity, sni: ep.ServerName})
}

// isUnprocessed reports whether a round trip failed in a way that proves
// the peer never processed the request (RFC 9113 8.7): a stream refused
// with REFUSED_STREAM, a stream above the last stream ID of the peer's
// GOAWAY, or a connection that became unusable before the request went
// out. The pool's meshh2 conns mark all of them ErrUnprocessed.
func isUnprocessed(err error) bool { return errors.Is(err, meshh2.ErrUnprocessed) }
