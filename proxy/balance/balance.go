// Package balance picks an endpoint for each request: power of two choices
// over a peak-EWMA latency estimate, weighted, over a live endpoint set.
//
// The cost of an endpoint is ewma_rtt * (pending+1) / weight. The RTT
// estimate is peak-sensitive: a sample above it replaces it at once, lower
// samples pull it down with a time constant of DecayTime, and while an
// endpoint gets no traffic its estimate decays towards zero with the same
// time constant, so an endpoint that was slow once is tried again later.
package balance

import (
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// ErrNoEndpoints is returned by Pick when there is no endpoint to choose
// (the set is empty, or every endpoint is in skip).
var ErrNoEndpoints = errors.New("no endpoints available")

const (
	// DefaultRTT is the estimate a new endpoint starts with: modest, so a
	// new endpoint gets some traffic at once without flooding it.
	DefaultRTT = 10 * time.Millisecond
	// DecayTime is the time constant of the EWMA.
	DecayTime = 10 * time.Second
	// maxRTT caps the estimate so repeated failure penalties stay finite.
	maxRTT = 30 * time.Second
)

// Endpoint is one address a destination can be reached at.
type Endpoint struct {
	Addr       string      // "ip:port" to dial
	Weight     uint32      // >= 1 (0 is treated as 1)
	Identity   identity.ID // zero: not meshed, plain TCP
	Protocol   apiv1.ProtocolHint_Protocol
	Zone       string
	TargetPort uint32
	Labels     map[string]string
}

// stats is the load state of one address. It outlives Update calls that
// keep the address, so the estimate and in-flight count carry over.
type stats struct {
	pending atomic.Int64

	mu    sync.Mutex
	rttNs float64 // peak-EWMA estimate, nanoseconds
	stamp int64   // when rttNs was last written, nanoseconds on the balancer clock
}

// node is an immutable pairing of an endpoint's metadata with its stats.
type node struct {
	ep     Endpoint
	weight float64
	st     *stats
}

// Balancer is safe for concurrent use. Pick and Done take no balancer-wide
// lock: the endpoint set is an immutable snapshot swapped atomically.
type Balancer struct {
	nodes atomic.Pointer[[]*node]
	rng   *rand.Rand // over an atomic splitmix64 source: lock-free and race-free

	updateMu sync.Mutex // serialises Update

	start time.Time
	now   func() int64 // nanoseconds since start; replaced by tests
}

// New returns an empty Balancer.
func New() *Balancer {
	b := &Balancer{start: time.Now()}
	b.now = func() int64 { return int64(time.Since(b.start)) }
	src := &splitmix{}
	src.state.Store(rand.Uint64())
	b.rng = rand.New(src)
	empty := []*node{}
	b.nodes.Store(&empty)
	return b
}

// splitmix is a goroutine-safe rand.Source: one atomic add per number.
type splitmix struct{ state atomic.Uint64 }

func (s *splitmix) Uint64() uint64 {
	z := s.state.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Update replaces the endpoint set. Addresses that stay keep their latency
// estimate and in-flight count; metadata (weight, identity...) is taken
// from eps. Picks in flight are unaffected. Duplicate addresses: the last
// one wins.
func (b *Balancer) Update(eps []Endpoint) {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	old := *b.nodes.Load()
	byAddr := make(map[string]*stats, len(old))
	for _, n := range old {
		byAddr[n.ep.Addr] = n.st
	}
	index := make(map[string]int, len(eps))
	nodes := make([]*node, 0, len(eps))
	now := b.now()
	for _, ep := range eps {
		if ep.Weight == 0 {
			ep.Weight = 1
		}
		st, ok := byAddr[ep.Addr]
		if !ok {
			st = &stats{rttNs: float64(DefaultRTT), stamp: now}
			byAddr[ep.Addr] = st
		}
		n := &node{ep: ep, weight: float64(ep.Weight), st: st}
		if i, dup := index[ep.Addr]; dup {
			nodes[i] = n
			continue
		}
		index[ep.Addr] = len(nodes)
		nodes = append(nodes, n)
	}
	b.nodes.Store(&nodes)
}

// Endpoints returns a copy of the current set.
func (b *Balancer) Endpoints() []Endpoint {
	nodes := *b.nodes.Load()
	out := make([]Endpoint, len(nodes))
	for i, n := range nodes {
		out[i] = n.ep
	}
	return out
}

// Len returns the number of endpoints.
func (b *Balancer) Len() int { return len(*b.nodes.Load()) }

// Pick is one chosen endpoint. Call Done exactly once when the request (or
// connection attempt) ends; further calls are ignored.
type Pick struct {
	Endpoint Endpoint

	st    *stats
	b     *Balancer
	start int64
	done  atomic.Bool
}

// Pick chooses an endpoint: two distinct random candidates, the cheaper
// wins. skip holds Addrs to avoid (endpoints a retry already failed on);
// if every endpoint is skipped, Pick returns ErrNoEndpoints.
func (b *Balancer) Pick(skip map[string]bool) (*Pick, error) {
	nodes := *b.nodes.Load()
	now := b.now()
	var n *node
	if len(skip) == 0 {
		n = b.pickFrom(nodes, now)
	} else {
		n = b.pickSkipping(nodes, skip, now)
	}
	if n == nil {
		return nil, ErrNoEndpoints
	}
	n.st.pending.Add(1)
	return &Pick{Endpoint: n.ep, st: n.st, b: b, start: now}, nil
}

func (b *Balancer) pickFrom(nodes []*node, now int64) *node {
	switch len(nodes) {
	case 0:
		return nil
	case 1:
		return nodes[0]
	}
	i, j := b.two(len(nodes))
	return cheaper(nodes[i], nodes[j], now)
}

// pickSkipping is the retry path: it counts eligible endpoints and picks two
// of them by rank, with no allocation.
func (b *Balancer) pickSkipping(nodes []*node, skip map[string]bool, now int64) *node {
	eligible := 0
	for _, n := range nodes {
		if !skip[n.ep.Addr] {
			eligible++
		}
	}
	switch eligible {
	case 0:
		return nil
	case 1:
		for _, n := range nodes {
			if !skip[n.ep.Addr] {
				return n
			}
		}
	}
	i, j := b.two(eligible)
	var a, c *node
	k := 0
	for _, n := range nodes {
		if skip[n.ep.Addr] {
			continue
		}
		if k == i {
			a = n
		}
		if k == j {
			c = n
		}
		k++
	}
	return cheaper(a, c, now)
}

// two returns two distinct uniform indexes in [0, n), n >= 2.
func (b *Balancer) two(n int) (int, int) {
	i := b.rng.IntN(n)
	j := b.rng.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

func cheaper(x, y *node, now int64) *node {
	if x.cost(now) <= y.cost(now) {
		return x
	}
	return y
}

func (n *node) cost(now int64) float64 {
	n.st.mu.Lock()
	rtt := decayed(n.st.rttNs, now-n.st.stamp)
	n.st.mu.Unlock()
	return rtt * float64(n.st.pending.Load()+1) / n.weight
}

// decayed is the estimate after elapsed nanoseconds without samples.
func decayed(rtt float64, elapsed int64) float64 {
	if elapsed <= 0 {
		return rtt
	}
	return rtt * expNeg(float64(elapsed)/float64(DecayTime))
}

// expNeg is e^-x; for the tiny x of back-to-back requests a series is exact
// enough (error < x^3/6) and much cheaper than math.Exp.
func expNeg(x float64) float64 {
	if x < 1e-3 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}

// Done releases the pick and feeds its latency to the estimate. rtt <= 0
// means "measure it": the time since Pick. A failure counts as a latency
// sample of at least twice the current estimate, so an endpoint that keeps
// failing fast does not attract traffic; the penalty decays like any peak.
func (p *Pick) Done(rtt time.Duration, failed bool) {
	if p == nil || !p.done.CompareAndSwap(false, true) {
		return
	}
	now := p.b.now()
	if rtt <= 0 {
		rtt = time.Duration(now - p.start)
	}
	p.st.observe(float64(rtt), failed, now)
	p.st.pending.Add(-1)
}

func (st *stats) observe(sample float64, failed bool, now int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	elapsed := max(now-st.stamp, 0)
	cur := st.rttNs
	if failed {
		sample = math.Max(sample, 2*math.Max(cur, float64(DefaultRTT)))
	}
	if sample >= cur {
		cur = sample // peak: take bad news at once
	} else {
		// Time-based EWMA: good news moves the estimate with time constant
		// DecayTime whatever the request rate.
		w := expNeg(float64(elapsed) / float64(DecayTime))
		cur = cur*w + sample*(1-w)
	}
	st.rttNs = math.Min(cur, float64(maxRTT))
	st.stamp = now
}
