// Package routes is the proxy's Destination.GetRoutes client: for each
// authority the outbound side sends to, the routing configuration the
// controller gives (apiv1.RouteConfig). One stream per authority is shared
// by every caller; the last good answer is kept while the controller is
// unreachable; authorities nobody asks for are swept after the idle time.
// Until an answer arrives an authority has no routes: the proxy's defaults
// (one backend, the authority itself) apply.
package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/routematch"
	"github.com/trellis-mesh/trellis/proxy/headermod"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/watchcache"
)

// Options configures a Watcher. Zero values are fine.
type Options struct {
	CallerIdentity string        // SPIFFE ID sent in GetDestination.caller_identity
	IdleTimeout    time.Duration // default watchcache.DefaultIdleTimeout
	// Backoff bounds between reconnection attempts (watchcache defaults).
	MinBackoff, MaxBackoff time.Duration
	Registerer             prometheus.Registerer
	Logger                 *slog.Logger
}

// Watcher is safe for concurrent use.
type Watcher struct {
	c *watchcache.Cache[string, *apiv1.RouteConfig]
}

// Snapshot is the routing configuration of one authority now.
type Snapshot struct {
	Authority string
	// Service is the controller's name of the service ("" without an
	// answer).
	Service string
	// Routes, in the controller's order; empty: the defaults apply. Shared:
	// do not modify.
	Routes []*apiv1.Route
	// FromController is false when there is no answer: none yet, the
	// controller unreachable since the watch started, or after Close.
	FromController bool
	// Config is the answer itself (nil without one): a new pointer for
	// each answer, so a caller may key what it derives from it (compiled
	// routes) by it. Shared: do not modify.
	Config *apiv1.RouteConfig
}

// New returns a Watcher. Call Close to stop its streams.
func New(client apiv1.DestinationClient, opts Options) *Watcher {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := metrics.NewControlPlane(opts.Registerer, "routes")
	if err != nil {
		log.Error("routes metrics not registered", "err", err)
	}
	c := watchcache.New(watchcache.Config[string, *apiv1.RouteConfig]{
		Service: "routes",
		Open: func(ctx context.Context, authority string) (watchcache.Recv[*apiv1.RouteConfig], error) {
			st, err := client.GetRoutes(ctx, &apiv1.GetDestination{Path: authority, CallerIdentity: opts.CallerIdentity})
			if err != nil {
				return nil, err
			}
			return st.Recv, nil
		},
		Check:       func(_ string, rc *apiv1.RouteConfig) error { return Check(rc) },
		Describe:    describe,
		IdleTimeout: opts.IdleTimeout,
		MinBackoff:  opts.MinBackoff, MaxBackoff: opts.MaxBackoff,
		Metrics: m, Logger: log, KeyAttr: "authority",
	})
	return &Watcher{c: c}
}

// Get returns the routes of authority, starting its watch on first use and
// waiting, bounded by ctx, for the controller's first answer. An authority
// with an answer is served at once, also while the controller is
// unreachable.
func (w *Watcher) Get(ctx context.Context, authority string) Snapshot {
	s := Snapshot{Authority: authority}
	if authority == "" {
		return s
	}
	if rc, ok := w.c.Get(ctx, authority); ok {
		s.Service, s.Routes, s.FromController, s.Config = rc.GetService(), rc.GetRoutes(), true, rc
	}
	return s
}

// Observe starts watching authority (if it is not watched) without
// waiting, and keeps it from the idle sweep.
func (w *Watcher) Observe(authority string) {
	if authority != "" {
		w.c.Observe(authority)
	}
}

// Close stops every watch.
func (w *Watcher) Close() { w.c.Close() }

// Check refuses a configuration the proxy could not apply as written: a
// match that does not compile (routematch: a path that is not absolute, a
// regex that is not RE2 or too long), a header modifier that could inject
// a line or touch the mesh's headers (headermod), a negative timeout, a retry budget outside [0,1].
func Check(rc *apiv1.RouteConfig) error {
	var errs []error
	for _, r := range rc.GetRoutes() {
		if err := checkRoute(r); err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", r.GetName(), err))
		}
	}
	return errors.Join(errs...)
}

func checkRoute(r *apiv1.Route) error {
	var errs []error
	for i, m := range r.GetMatches() {
		if _, err := routematch.Compile(m); err != nil {
			errs = append(errs, fmt.Errorf("match %d: %w", i, err))
		}
	}
	for _, m := range []*apiv1.HeaderModifier{r.GetRequestHeaders(), r.GetResponseHeaders()} {
		if _, err := headermod.Compile(m); err != nil {
			errs = append(errs, err)
		}
	}
	for _, b := range r.GetBackends() {
		// An empty authority is an unresolved backend (answered 500).
		for _, m := range []*apiv1.HeaderModifier{b.GetRequestHeaders(), b.GetResponseHeaders()} {
			if _, err := headermod.Compile(m); err != nil {
				errs = append(errs, fmt.Errorf("backend %q: %w", b.GetAuthority(), err))
			}
		}
	}
	if t := r.GetTimeout(); t != nil && (t.CheckValid() != nil || t.AsDuration() < 0) {
		errs = append(errs, fmt.Errorf("invalid timeout %v", t))
	}
	if rp := r.GetRetry(); rp != nil {
		if t := rp.GetPerTryTimeout(); t != nil && (t.CheckValid() != nil || t.AsDuration() < 0) {
			errs = append(errs, fmt.Errorf("invalid per-try timeout %v", t))
		}
		if b := rp.GetBudgetRatio(); !(b >= 0 && b <= 1) { // also refuses NaN
			errs = append(errs, fmt.Errorf("retry budget ratio %v outside [0,1]", b))
		}
	}
	return errors.Join(errs...)
}

func describe(rc *apiv1.RouteConfig) []any {
	return []any{"dst_service", rc.GetService(), "routes", len(rc.GetRoutes())}
}
