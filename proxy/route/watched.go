package route

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/routes"
)

// Table gives the compiled routes of a service the control plane knows
// (nil: none, the service itself takes every request).
type Table interface {
	Rules(ctx context.Context, service string) *Rules
}

// Source is where a Watched table's routes come from (routes.Watcher).
type Source interface {
	Get(ctx context.Context, authority string) routes.Snapshot
}

// DefaultWait bounds how long the first requests to a service wait for
// the controller's first routes answer before they go on without routes.
// The wait ends at once when the routes stream fails (the controller is
// unreachable), so the bound only matters for a controller that is slow
// to answer: a busy node at a pod's start took over 500 ms, and the
// requests sent meanwhile ignored a 0/100 split (e2e traffic-split).
const DefaultWait = 3 * time.Second

// maxCached bounds the services a Watched table keeps compiled routes
// for; past it the cache starts over (the routes client bounds its
// watches the same way).
const maxCached = 4096

// Watched is the Table fed by the routes client: each answer is compiled
// once, when a request first sees it, and shared by every request until
// the next answer.
type Watched struct {
	src  Source
	wait time.Duration
	log  *slog.Logger
	done context.Context // cancelled: a lookup that must not wait

	mu    sync.RWMutex
	cache map[string]*compiled
}

type compiled struct {
	cfg    *apiv1.RouteConfig // the answer compiled, nil before one
	rules  *Rules             // nil: none, or the answer did not compile
	waited atomic.Bool        // a request waited for the first answer
}

// NewWatched returns a table over src; wait <= 0 is DefaultWait.
func NewWatched(src Source, wait time.Duration, log *slog.Logger) *Watched {
	if wait <= 0 {
		wait = DefaultWait
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	return &Watched{src: src, wait: wait, log: log, done: done, cache: map[string]*compiled{}}
}

// Rules returns service's compiled routes. The first lookup of a service
// waits up to the table's wait (and ctx) for the controller's answer;
// once one lookup has waited in vain, the others take what there is at
// once, so a controller that never answers costs one short wait, not one
// per request.
func (w *Watched) Rules(ctx context.Context, service string) *Rules {
	w.mu.RLock()
	c := w.cache[service]
	w.mu.RUnlock()
	// What there is, without a timer per request; a wait only while
	// there is no answer yet, and not again once a wait was in vain.
	snap := w.src.Get(w.done, service)
	if snap.Config == nil && (c == nil || c.cfg != nil || !c.waited.Load()) {
		wctx, cancel := context.WithTimeout(ctx, w.wait)
		snap = w.src.Get(wctx, service)
		cancel()
	}
	switch {
	case c != nil && c.cfg == snap.Config:
		return c.rules
	case c != nil && snap.Config == nil:
		// The client lost the answer (its watch was swept while idle and
		// starts again): the last one still holds until the next.
		return c.rules
	}
	return w.store(service, snap)
}

// store compiles a new answer for service (or records there is none yet).
func (w *Watched) store(service string, snap routes.Snapshot) *Rules {
	c := &compiled{cfg: snap.Config}
	c.waited.Store(true)
	var err error
	if snap.Config != nil {
		c.rules, err = Compile(snap.Routes)
		if err == nil {
			c.rules = c.rules.withLimit(snap.Config.GetLimit())
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.cache[service]
	if old != nil && old.cfg == snap.Config {
		return old.rules // compiled meanwhile by another request
	}
	if err != nil {
		// The last answer that compiled holds, as the routes client
		// keeps its last valid answer.
		w.log.Warn("new routes not applied: they do not compile; the last ones hold", "dst_service", service, "err", err)
		if old != nil {
			c.rules = old.rules
		}
	}
	if len(w.cache) >= maxCached {
		clear(w.cache)
	}
	w.cache[service] = c
	return c.rules
}

// Service returns the control plane's name of the service authority
// resolves to ("" when unknown): the answer Rules waits for (at most as
// long, and only as often).
func (w *Watched) Service(ctx context.Context, authority string) string {
	w.Rules(ctx, authority)
	return w.src.Get(w.done, authority).Service
}
