// Package ratelimit is the inbound stage that enforces a Server's
// RateLimit (api/v1 Limits, from Policy.WatchInbound): token buckets per
// server, per client identity and per overridden identity, refused with
// 429 and Retry-After (gRPC RESOURCE_EXHAUSTED); and a concurrency limit,
// a hard cap and/or an adaptive one (Gradient), refused at once with 503
// "overloaded" (gRPC UNAVAILABLE). It runs after authz, so a caller that
// may not reach the app cannot use up a budget. See docs/traffic.md.
package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Source is the policy of each inbound port (inboundpolicy.Watcher).
type Source interface {
	Get(ctx context.Context, port uint16) inboundpolicy.Snapshot
}

// Config configures a Limiter. Source is required.
type Config struct {
	Source  Source
	Metrics *metrics.RateLimit // nil: unregistered
	// Now is the clock (default time.Now).
	Now func() time.Time
	// MaxClients bounds each server's perClient buckets
	// (DefaultMaxClients).
	MaxClients int
	// Window is the adaptive limit's window (DefaultWindow).
	Window time.Duration
}

// Limiter is the rate limit stage: Layer. Each port's limits are built
// once per answer of the control plane; an answer whose limits are the
// same as before keeps their state.
type Limiter struct {
	cfg   Config
	done  context.Context // cancelled: a Get that never waits
	ports sync.Map        // uint16 -> *server
	mu    sync.Mutex      // serialises rebuilds
}

// New returns the Limiter of cfg.
func New(cfg Config) (*Limiter, error) {
	if cfg.Source == nil {
		return nil, errors.New("ratelimit: Source is required")
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = metrics.NewRateLimit(nil)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	return &Limiter{cfg: cfg, done: done}, nil
}

// Layer is the stage: after authz (x.AppAddr is the target), before the app.
func (l *Limiter) Layer(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		s := l.server(forward.PortOf(x.AppAddr))
		if s.rate == nil && s.conc == nil {
			return next.Serve(x)
		}
		return l.serve(s, x, next)
	})
}

func (l *Limiter) serve(s *server, x *pipeline.Exchange, next pipeline.Handler) error {
	start := l.cfg.Now()
	if s.probes.exempt(x.Conn.TLS, x.R, start) {
		l.cfg.Metrics.Exempt(s.name, metrics.ExemptProbe)
		return next.Serve(x)
	}
	if s.rate != nil {
		client := ""
		if x.Conn.TLS {
			client = x.Conn.Peer
		}
		if r := s.rate.admit(client, start); r != nil {
			return l.refuse(s, x, r, http.StatusTooManyRequests, proxyerr.ReasonRateLimited)
		}
	}
	if s.conc == nil {
		return next.Serve(x)
	}
	before, r := s.conc.acquire()
	if r != nil {
		return l.refuse(s, x, r, http.StatusServiceUnavailable, proxyerr.ReasonOverloaded)
	}
	ok := false
	defer func() {
		now := l.cfg.Now()
		s.conc.release(now, now.Sub(start), before, ok)
	}()
	err := next.Serve(x)
	ok = err == nil && !x.Broken()
	return err
}

func (l *Limiter) refuse(s *server, x *pipeline.Exchange, r *refusal, status int, reason string) error {
	l.cfg.Metrics.Refused(metrics.Inbound, s.name, r.reason, r.client)
	e := proxyerr.ForRequest(x.R, status, reason, r.msg)
	e.RetryAfter = r.wait
	return e
}

// unlimited is the server of every port without limits: nothing is kept
// per such port, so a caller naming many ports grows no map.
var unlimited = &server{}

// server returns the limits of port for its answer now.
func (l *Limiter) server(port uint16) *server {
	p := l.cfg.Source.Get(l.done, port).Policy
	v, ok := l.ports.Load(port)
	if ok && v.(*server).src == p {
		return v.(*server)
	}
	if !ok && !limited(p.GetLimits()) {
		return unlimited
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var old *server
	if v, ok := l.ports.Load(port); ok {
		if old = v.(*server); old.src == p {
			return old
		}
	}
	s := l.build(p, old)
	if s.rate == nil && s.conc == nil {
		l.ports.Delete(port)
		return unlimited
	}
	l.ports.Store(port, s)
	return s
}

// limited reports whether an answer's limits limit anything.
func limited(lim *apiv1.Limits) bool {
	return lim.GetRequestsPerSecond() > 0 || lim.GetClientRequestsPerSecond() > 0 || len(lim.GetOverrides()) > 0 ||
		lim.GetMaxConcurrency() > 0 || lim.GetAdaptiveConcurrency() != nil
}

// build makes a port's limits from answer p, keeping what old (the
// previous answer's, or nil) has of the same configuration.
func (l *Limiter) build(p *apiv1.ServerPolicy, old *server) *server {
	now, lim := l.cfg.Now(), p.GetLimits()
	s := &server{src: p, name: p.GetName()}
	sameName := old != nil && old.name == s.name
	if sameName && old.rate != nil && sameRate(old.rate.lim, lim) {
		s.rate = old.rate
	} else {
		s.rate = newRateState(lim, l.cfg.MaxClients, now)
	}
	if sameName && old.probes != nil && sameProbes(old.probes.route, lim.GetProbes()) {
		s.probes = old.probes
	} else {
		s.probes = newProbes(lim.GetProbes(), now)
	}
	if sameName && old.conc != nil && sameConc(old.conc.lim, lim) {
		s.conc = old.conc
	} else {
		if old != nil && old.conc != nil {
			l.cfg.Metrics.Forget(old.name)
		}
		gauges := func() (prometheus.Gauge, prometheus.Gauge) { return l.cfg.Metrics.Concurrency(s.name) }
		s.conc = newConcState(lim, gauges, l.cfg.Window, now)
	}
	return s
}
