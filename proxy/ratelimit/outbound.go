package ratelimit

import (
	"fmt"
	"net/http"
	"sync"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// maxOutbound bounds the outbound buckets a proxy keeps. Each is named by
// the controller (one per RateLimit on a Service), never by the app, so
// the bound only guards against a runaway configuration: past it the
// buckets start over (full), which loosens limits for a moment rather than
// growing without end.
const maxOutbound = 4096

// Outbound is the client side's limit on its own requests to services
// (apiv1.OutboundLimit: a RateLimit whose targetRef is a Service, sent
// with the service's routes). Its token buckets are keyed by the
// RateLimit's name, so the ports of one Service, and every name the app
// uses for it, share one bucket. A request finding it empty is answered
// 429 with Retry-After (gRPC: RESOURCE_EXHAUSTED) by this proxy, never
// sent. Safe for concurrent use.
type Outbound struct {
	metrics *metrics.RateLimit
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*outBucket
}

// outBucket is one RateLimit's bucket, with the settings it was made of:
// new settings make a new (full) bucket.
type outBucket struct {
	rps, burst uint32
	mu         sync.Mutex
	b          Bucket
}

// NewOutbound returns the outbound limiter; m nil: uncounted; now nil:
// time.Now.
func NewOutbound(m *metrics.RateLimit, now func() time.Time) *Outbound {
	if m == nil {
		m, _ = metrics.NewRateLimit(nil)
	}
	if now == nil {
		now = time.Now
	}
	return &Outbound{metrics: m, now: now, buckets: map[string]*outBucket{}}
}

// Admit takes a token of lim's bucket for x, or returns the 429 that
// answers it (nil lim, or one without a rate: admitted). The caller
// calls it once per request from the app, before the request is
// balanced: retries and mirrored copies take no token.
func (o *Outbound) Admit(x *pipeline.Exchange, lim *apiv1.OutboundLimit) error {
	if lim.GetRequestsPerSecond() == 0 {
		return nil
	}
	now := o.now()
	b := o.bucket(lim, now)
	b.mu.Lock()
	wait := b.b.Wait(now)
	if wait == 0 {
		b.b.Take()
	}
	b.mu.Unlock()
	if wait == 0 {
		return nil
	}
	o.metrics.Refused(metrics.Outbound, lim.GetName(), metrics.LimitRate, metrics.LimitClientServer)
	e := proxyerr.ForRequest(x.R, http.StatusTooManyRequests, proxyerr.ReasonRateLimited,
		fmt.Sprintf("rate limited by this client's proxy: RateLimit %s allows each client proxy %d requests a second (burst %d) to %s",
			lim.GetName(), lim.GetRequestsPerSecond(), burstOf(lim.GetRequestsPerSecond(), lim.GetBurst()), x.Dest.Dst))
	e.RetryAfter = wait
	return e
}

// bucket returns lim's bucket, made when there is none (full) or its
// settings changed (with the old one's tokens, at most the new burst: a
// Service's ports may see a change at different moments, and going back
// and forth between two settings must not refill the bucket).
func (o *Outbound) bucket(lim *apiv1.OutboundLimit, now time.Time) *outBucket {
	name, rps, burst := lim.GetName(), lim.GetRequestsPerSecond(), lim.GetBurst()
	o.mu.Lock()
	defer o.mu.Unlock()
	old, ok := o.buckets[name]
	if ok && old.rps == rps && old.burst == burst {
		return old
	}
	b := &outBucket{rps: rps, burst: burst, b: NewBucket(rps, burst, now)}
	if ok {
		old.mu.Lock()
		old.b.refill(now)
		b.b.tokens = min(b.b.tokens, old.b.tokens)
		old.mu.Unlock()
	} else if len(o.buckets) >= maxOutbound {
		clear(o.buckets)
	}
	o.buckets[name] = b
	return b
}
