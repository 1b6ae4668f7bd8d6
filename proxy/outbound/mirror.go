package outbound

import (
	"errors"
	"net/http"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// mirrorChain is the way of a mirrored copy (proxy/mirror): its own
// observe stage (a copy counts as a request to the mirror's service),
// the mirror's authority resolved (no routes: a mirror's own routes
// could mirror again), then the upstream stage like any request.
func (p *Proxy) mirrorChain() *pipeline.Observe {
	return &pipeline.Observe{
		Direction: metrics.Outbound, Metrics: p.m, Errors: p.errs,
		Begin: func(x *pipeline.Exchange) { x.LogKey = "mirror" },
		Next:  pipeline.Chain(p.upstream, p.mirrorDest),
	}
}

// mirrorDest resolves a copy's authority (its Host) to the service.
func (p *Proxy) mirrorDest(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		x.Authority = x.R.Host
		x.Key.DstService, x.LogVal = x.Authority, x.Authority
		known, bal, err := p.resolveDst(x.R.Context(), x.Authority)
		if err != nil || !known {
			return proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "mirror "+x.Authority+" not resolved")
		}
		x.Dest = pipeline.Dest{Dst: x.Authority, Balancer: bal}
		return next.Serve(x)
	})
}

// sendMirror sends a copy and discards the answer: true when the mirror
// answered (any status), false when this proxy answered for it.
func (p *Proxy) sendMirror(r *http.Request) (answered bool) {
	w := &discard{h: http.Header{}}
	defer func() {
		// A copy whose response broke mid-way ends as the observe stage
		// ends any: with http.ErrAbortHandler, meant for a server.
		if v := recover(); v != nil {
			if err, ok := v.(error); !ok || !errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			answered = false
		}
	}()
	p.mirrors.ServeHTTP(w, r)
	return w.status != 0 && w.h.Get(proxyerr.HeaderProxyError) == ""
}

// discard is the ResponseWriter of a copy: the status kept, the rest
// dropped.
type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header { return d.h }

func (d *discard) Write(b []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	return len(b), nil
}

func (d *discard) WriteHeader(status int) {
	if d.status == 0 {
		d.status = status
	}
}

func (d *discard) Flush() {}
