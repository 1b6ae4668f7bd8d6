// Package route is the outbound route stage: it names the destination of
// a request (its authority, or in transparent mode its original
// destination), resolves it to a service whose endpoints the upstream
// stage balances over (or to an address dialled as it is), and applies
// the service's routes (the Gateway API's HTTPRoute and GRPCRoute rules
// from the control plane, compiled once per answer): the most specific
// rule is Exchange.Route, its redirect answers at once, its weighted
// backend becomes the destination, its header modifiers and URL rewrite
// change the request, and its response header modifiers are registered
// for the upstream stage.
package route

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Resolve looks an authority ("name.ns:port" or "ip:port") up in the
// control plane: known is false when the control plane does not know it.
type Resolve func(ctx context.Context, authority string) (known bool, bal *balance.Balancer, err error)

// Stage is the route stage.
type Stage struct {
	// Transparent: the request's Host when it names a known service, else
	// its connection's original destination, passed through when unknown.
	Transparent bool
	Resolve     Resolve
	Table       Table // nil: no routes
	// Metrics counts the requests a route matched; nil: not counted.
	Metrics *metrics.Routes
	// Rand returns a uniform random number (a backend's pick); nil:
	// math/rand/v2.
	Rand func() uint64
	// Limit admits a request to a service under the service's outbound
	// limit (proxy/ratelimit.Outbound); nil: none applies.
	Limit Limiter
}

// Limiter admits a request under a service's outbound limit, or returns
// the error that answers it.
type Limiter interface {
	Admit(x *pipeline.Exchange, lim *apiv1.OutboundLimit) error
}

// Authority returns host:port of r, adding the port a request without one
// means: 80, or in transparent mode the original destination's.
func (s *Stage) Authority(r *http.Request, c *pipeline.Conn) string {
	host := r.Host
	if r.URL != nil && r.URL.IsAbs() && r.URL.Host != "" {
		host = r.URL.Host
	}
	if host == "" {
		return ""
	}
	if HasPort(host) {
		return host
	}
	if s.Transparent && c.Orig.IsValid() {
		return host + ":" + strconv.Itoa(int(c.Orig.Port()))
	}
	return host + ":80"
}

// HasPort reports whether host ends in a port.
func HasPort(host string) bool {
	i := strings.LastIndexByte(host, ':')
	return i >= 0 && i > strings.LastIndexByte(host, ']')
}

// Layer returns the stage as a pipeline layer: it sets x.Authority, Dst,
// Balancer or Addr, the dst_service label, and x.Route when a route of
// the service matches (then applied by apply, and counted).
func (s *Stage) Layer(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		if x.Authority == "" {
			x.Authority = s.Authority(x.R, &x.Conn)
		}
		if x.Authority == "" && !s.Transparent {
			return proxyerr.New(http.StatusBadRequest, metrics.ReasonBadRequest, "request has no Host or :authority")
		}
		if err := s.Lookup(x); err != nil {
			x.Key.DstService, x.LogVal = x.Authority, x.Authority
			return err
		}
		var rules *Rules
		if s.Table != nil && x.Dest.Balancer != nil {
			rules = s.Table.Rules(x.R.Context(), x.Dest.Dst)
			// The service's limit, before its routes pick a backend: one
			// token per request the app sends it, whatever the backend.
			if lim := rules.Limit(); lim != nil && s.Limit != nil {
				if err := s.Limit.Admit(x, lim); err != nil {
					x.Key.DstService, x.LogVal = x.Dest.Dst, x.Dest.Dst
					return err
				}
			}
		}
		x.Key.DstService, x.LogVal = x.Dest.Dst, x.Dest.Dst
		if rules.Len() == 0 {
			return next.Serve(x)
		}
		rule := rules.Select(x.R)
		if rule == nil {
			// Routes attached to the service own its traffic: a request
			// none of their rules matches is answered 404, as the
			// Gateway API says, not sent to the service around them.
			return proxyerr.ForRequest(x.R, http.StatusNotFound, proxyerr.ReasonNoRoute, "no route of "+x.Dest.Dst+" matches the request")
		}
		x.Route = rule.Route
		service := x.Dest.Dst // the parent; apply may pick a backend
		err := s.apply(x, rule, next)
		s.count(x, service, err)
		return err
	})
}

// apply serves x by rule: a redirect answers here; else the rule's
// backend, filters and response edits, then the rest of the chain.
func (s *Stage) apply(x *pipeline.Exchange, rule *Rule, next pipeline.Handler) error {
	x.Key.DstService, x.LogVal = x.Dest.Dst, x.Dest.Dst
	if rd := rule.Route.GetRedirect(); rd != nil {
		h := x.W.Header()
		h.Set("Location", rule.location(x.R, x.Authority))
		h.Set("Content-Length", "0")
		status := redirectStatus(rd)
		x.W.WriteHeader(status)
		x.Wrote(status, "", nil)
		return nil
	}
	n := s.rand()
	b, ok := rule.Pick(n)
	var d resolved // b's answer, looked up once for failover and toBackend
	if ok && b != nil && b.Authority != "" {
		b, d = s.failover(x, rule, b, n)
	}
	if !ok {
		return proxyerr.New(http.StatusInternalServerError, proxyerr.ReasonNoBackend, "route "+rule.Route.GetName()+" has no backend with a weight")
	}
	rule.req.Apply(x.R.Header)
	if rule.resp != nil {
		x.AddResponseEdit(rule.resp)
	}
	if b != nil && b.Authority == "" {
		return proxyerr.New(http.StatusInternalServerError, proxyerr.ReasonNoBackend, "route "+rule.Route.GetName()+" picked a backend the controller could not resolve")
	}
	if b != nil {
		b.req.Apply(x.R.Header)
		if b.resp != nil {
			x.AddResponseEdit(b.resp)
		}
		if err := s.toBackend(x, b.Authority, d); err != nil {
			return err
		}
	}
	rule.rewrite(x.R)
	return next.Serve(x)
}

// failover keeps traffic flowing when the picked backend has no endpoints
// in this proxy's view (a mirror of another cluster scaled to zero there,
// a Service with no ready pod): the rule's other backends that have
// endpoints take its share, by their weights. It moves back as soon as
// the backend has endpoints again. Without another, the pick stands (and
// is answered 503 no_endpoints). Backends the controller could not
// resolve are never candidates: their share is answered 500, as the
// Gateway API says. It returns the backend and its answer; the common
// case costs the one lookup toBackend needs anyway and a length check.
func (s *Stage) failover(x *pipeline.Exchange, rule *Rule, b *Backend, n uint64) (*Backend, resolved) {
	d := s.resolve(x, b.Authority)
	if len(rule.backends) < 2 || d.hasEndpoints() {
		return b, d
	}
	var total uint64
	cands := make([]resolved, len(rule.backends)) // only when failing over
	for i := range rule.backends {
		c := &rule.backends[i]
		if c == b || c.weight == 0 || c.Authority == "" {
			continue
		}
		if cands[i] = s.resolve(x, c.Authority); cands[i].hasEndpoints() {
			total += c.weight
		}
	}
	if total == 0 {
		return b, d
	}
	n %= total
	for i := range rule.backends {
		if !cands[i].hasEndpoints() {
			continue
		}
		if n < rule.backends[i].weight {
			s.Metrics.Failover(rule.Route.GetName(), b.Authority)
			return &rule.backends[i], cands[i]
		}
		n -= rule.backends[i].weight
	}
	return b, d // unreachable
}

// resolved is a backend's answer from the control plane.
type resolved struct {
	known bool
	bal   *balance.Balancer
	err   error
}

// resolve looks a backend up; the route's own service is x's destination.
func (s *Stage) resolve(x *pipeline.Exchange, authority string) resolved {
	if authority == x.Dest.Dst {
		return resolved{known: true, bal: x.Dest.Balancer}
	}
	known, bal, err := s.Resolve(x.R.Context(), authority)
	return resolved{known, bal, err}
}

// hasEndpoints: the backend resolves to at least one endpoint here.
func (r resolved) hasEndpoints() bool {
	return r.err == nil && r.known && (r.bal == nil || r.bal.Len() > 0)
}

// toBackend makes the backend authority x's destination, from its answer
// d (resolve's).
func (s *Stage) toBackend(x *pipeline.Exchange, authority string, d resolved) *proxyerr.Error {
	x.Key.DstService, x.LogVal = authority, authority
	if authority == x.Dest.Dst {
		return nil
	}
	if d.err != nil {
		return proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving backend "+authority+": "+d.err.Error())
	}
	if !d.known {
		return proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "unknown backend service "+authority)
	}
	x.Dest = pipeline.Dest{Dst: authority, Balancer: d.bal}
	return nil
}

// count records a request a route of service matched in the route
// metrics.
func (s *Stage) count(x *pipeline.Exchange, service string, err error) {
	if s.Metrics == nil {
		return
	}
	class := metrics.ClassCancelled
	var pe *proxyerr.Error
	switch status, _, wrote := x.Outcome(); {
	case err == nil && wrote && !x.Cancelled():
		class = metrics.StatusClass(status)
	case errors.As(err, &pe):
		class = metrics.StatusClass(pe.Status)
	case err != nil && !errors.Is(err, pipeline.ErrCancelled):
		class = metrics.StatusClass(http.StatusBadGateway)
	case err == nil && !wrote:
		return // not HTTP any more (an Upgrade's tunnel)
	}
	s.Metrics.Request(metrics.RouteKey{
		Route: x.Route.GetName(), Rule: strconv.FormatUint(uint64(x.Route.GetRule()), 10),
		Direction: metrics.Outbound, Service: service, DstService: x.Key.DstService, Class: class,
	}, time.Since(x.Start).Seconds())
}

func (s *Stage) rand() uint64 {
	if s.Rand != nil {
		return s.Rand()
	}
	return rand.Uint64()
}

// Lookup resolves x.Authority into x.Dest: a known service, or in
// transparent mode the original destination. Routes are not applied (a
// CONNECT tunnel uses it too).
func (s *Stage) Lookup(x *pipeline.Exchange) *proxyerr.Error {
	authority := x.Authority
	ctx := x.R.Context()
	if !s.Transparent {
		known, bal, err := s.Resolve(ctx, authority)
		if err != nil {
			return proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+authority+": "+err.Error())
		}
		if !known {
			return proxyerr.New(http.StatusBadGateway, metrics.ReasonUnknownService, "unknown service "+authority)
		}
		x.Dest = pipeline.Dest{Dst: authority, Balancer: bal}
		return nil
	}
	// Transparent: the Host when it names a known service (the same as
	// the original destination's), else the original destination, else
	// straight through to it.
	if authority != "" {
		if known, bal, err := s.Resolve(ctx, authority); err == nil && known && s.sameService(ctx, authority, x.Conn.Orig) {
			x.Dest = pipeline.Dest{Dst: authority, Balancer: bal}
			return nil
		}
	}
	var err *proxyerr.Error
	x.Dest, err = s.Orig(ctx, x.Conn.Orig.String())
	return err
}

// Orig resolves a transparent connection's original destination orig: a
// known service, else orig itself, passed through.
func (s *Stage) Orig(ctx context.Context, orig string) (pipeline.Dest, *proxyerr.Error) {
	known, bal, err := s.Resolve(ctx, orig)
	if err != nil {
		return pipeline.Dest{}, proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "resolving "+orig+": "+err.Error())
	}
	if !known {
		return pipeline.Dest{Dst: orig, Addr: orig}, nil
	}
	return pipeline.Dest{Dst: orig, Balancer: bal}, nil
}

// Namer is implemented by a Table that knows the control plane's name of
// the service an authority resolves to ("" when it does not).
type Namer interface {
	Service(ctx context.Context, authority string) string
}

// sameService reports whether the Host's authority and the connection's
// original destination orig are the same service, or cannot be told
// apart. The address the client connected to decides which service it
// calls (GAMMA: a Service's frontend is its cluster IP, not a Host
// header), so a Host naming another service must not redirect it.
func (s *Stage) sameService(ctx context.Context, authority string, orig netip.AddrPort) bool {
	n, ok := s.Table.(Namer)
	if !ok || !orig.IsValid() || orig.String() == authority {
		return true
	}
	a, b := n.Service(ctx, authority), n.Service(ctx, orig.String())
	return a == "" || b == "" || a == b
}
