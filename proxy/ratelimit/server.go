package ratelimit

import (
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// server is the limits of one inbound port, built from one answer of the
// control plane. Its two halves have their own state and lock, so a new
// answer that leaves one half's configuration alone keeps that half (its
// buckets, its requests in flight and its learnt limit).
type server struct {
	src  *apiv1.ServerPolicy // the answer it was built from
	name string              // the server label
	rate *rateState          // nil: no rate limit
	conc *concState          // nil: no concurrency limit
	// probes is the exemption of the kubelet's probes; nil: none.
	probes *probes
}

// refusal is why a request is refused: metrics reason and client label,
// the message, and when to retry (rate limits only).
type refusal struct {
	reason, client, msg string
	wait                time.Duration
}

// rateState is a server's token buckets: its own, one per client
// (perClient) and one per overridden identity.
type rateState struct {
	lim       *apiv1.Limits // the rate fields are what counts
	mu        sync.Mutex
	server    Bucket
	each      *clients           // nil: no perClient
	overrides map[string]*Bucket // identity -> its own bucket
}

func newRateState(lim *apiv1.Limits, maxClients int, now time.Time) *rateState {
	if lim.GetRequestsPerSecond() == 0 && lim.GetClientRequestsPerSecond() == 0 && len(lim.GetOverrides()) == 0 {
		return nil // concurrency only
	}
	r := &rateState{lim: lim, server: NewBucket(lim.GetRequestsPerSecond(), lim.GetBurst(), now), overrides: map[string]*Bucket{}}
	if lim.GetClientRequestsPerSecond() > 0 {
		r.each = newClients(lim.GetClientRequestsPerSecond(), lim.GetClientBurst(), maxClients, now)
	}
	for _, o := range lim.GetOverrides() {
		for _, id := range o.GetIdentities() {
			if _, dup := r.overrides[id]; !dup && id != "" {
				b := NewBucket(o.GetRequestsPerSecond(), o.GetBurst(), now)
				r.overrides[id] = &b
			}
		}
	}
	return r
}

// sameRate reports whether two answers' rate limits are the same.
func sameRate(a, b *apiv1.Limits) bool {
	return a.GetRequestsPerSecond() == b.GetRequestsPerSecond() && a.GetBurst() == b.GetBurst() &&
		a.GetClientRequestsPerSecond() == b.GetClientRequestsPerSecond() && a.GetClientBurst() == b.GetClientBurst() &&
		len(a.GetOverrides()) == len(b.GetOverrides()) && equalOverrides(a.GetOverrides(), b.GetOverrides())
}

func equalOverrides(a, b []*apiv1.ClientLimit) bool {
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// admit takes a token for client (its mesh identity, "" without mesh TLS)
// from its client bucket and the server's, or refuses it: a token is
// taken only when both have one.
func (r *rateState) admit(client string, now time.Time) *refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	cb, label := r.clientBucket(client, now)
	if cb != nil {
		if w := cb.Wait(now); w > 0 {
			return &refusal{reason: metrics.LimitRate, client: label, wait: w, msg: r.clientMsg(client, label)}
		}
	}
	if w := r.server.Wait(now); w > 0 {
		return &refusal{reason: metrics.LimitRate, client: metrics.LimitClientServer, wait: w,
			msg: fmt.Sprintf("rate limited: the server allows %d requests a second (burst %d) from all clients", r.lim.GetRequestsPerSecond(), burstOf(r.lim.GetRequestsPerSecond(), r.lim.GetBurst()))}
	}
	if cb != nil {
		cb.Take()
	}
	r.server.Take()
	return nil
}

// clientBucket is the bucket of client and its metric label: its
// override's, else its perClient one, else none.
func (r *rateState) clientBucket(client string, now time.Time) (*Bucket, string) {
	if client != "" {
		if b, ok := r.overrides[client]; ok {
			return b, client
		}
	}
	if r.each != nil {
		return r.each.bucket(client, now), metrics.LimitClientEach
	}
	return nil, ""
}

func (r *rateState) clientMsg(client, label string) string {
	if label != metrics.LimitClientEach {
		for _, o := range r.lim.GetOverrides() {
			for _, id := range o.GetIdentities() {
				if id == client {
					return fmt.Sprintf("rate limited: the server allows this client %d requests a second (burst %d)", o.GetRequestsPerSecond(), burstOf(o.GetRequestsPerSecond(), o.GetBurst()))
				}
			}
		}
	}
	who := "each client"
	if client == "" {
		who = "the callers without mesh TLS together"
	}
	return fmt.Sprintf("rate limited: the server allows %s %d requests a second (burst %d)", who, r.lim.GetClientRequestsPerSecond(), burstOf(r.lim.GetClientRequestsPerSecond(), r.lim.GetClientBurst()))
}

func burstOf(rps, burst uint32) uint32 {
	if burst == 0 {
		return rps
	}
	return burst
}

// concState is a server's concurrency limit: a hard cap, an adaptive
// limit (capped by the hard one), or both.
type concState struct {
	lim      *apiv1.Limits // the concurrency fields are what counts
	mu       sync.Mutex
	hard     int       // 0: none
	grad     *Gradient // nil: not adaptive
	inFlight int
	// Gauges: trellis_concurrency_limit and _in_flight of the server.
	limitG, inFlightG prometheus.Gauge
}

func newConcState(lim *apiv1.Limits, gauges func() (prometheus.Gauge, prometheus.Gauge), window time.Duration, now time.Time) *concState {
	a := lim.GetAdaptiveConcurrency()
	if lim.GetMaxConcurrency() == 0 && a == nil {
		return nil
	}
	c := &concState{lim: lim, hard: int(lim.GetMaxConcurrency())}
	if a != nil {
		hi := a.GetMaxLimit()
		if c.hard > 0 && (hi == 0 || uint32(c.hard) < hi) {
			hi = uint32(c.hard)
		}
		c.grad = NewGradient(a.GetMinLimit(), hi, window, now)
	}
	c.limitG, c.inFlightG = gauges()
	c.limitG.Set(float64(c.limit()))
	c.inFlightG.Set(0)
	return c
}

// sameConc reports whether two answers' concurrency limits are the same.
func sameConc(a, b *apiv1.Limits) bool {
	return a.GetMaxConcurrency() == b.GetMaxConcurrency() && proto.Equal(a.GetAdaptiveConcurrency(), b.GetAdaptiveConcurrency())
}

func (c *concState) limit() int {
	if c.grad != nil {
		return c.grad.Limit()
	}
	return c.hard
}

// acquire lets a request in if the limit allows one more, returning how
// many were in flight before it.
func (c *concState) acquire() (int, *refusal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, lim := c.inFlight, c.limit()
	if n >= lim {
		kind := "limit"
		if c.grad != nil {
			kind = "adaptive limit"
		}
		return n, &refusal{reason: metrics.LimitConcurrency, client: metrics.LimitClientServer,
			msg: fmt.Sprintf("overloaded: the server's concurrency %s of %d requests in flight is reached", kind, lim)}
	}
	c.inFlight++
	c.inFlightG.Set(float64(c.inFlight))
	return n, nil
}

// release ends a request; a completed one (ok) is a latency sample.
func (c *concState) release(now time.Time, rtt time.Duration, before int, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inFlight--
	c.inFlightG.Set(float64(c.inFlight))
	if c.grad != nil && ok {
		c.grad.Sample(now, rtt, before+1)
		c.limitG.Set(float64(c.grad.Limit()))
	}
}
