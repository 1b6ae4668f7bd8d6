// Package balance picks an endpoint for each request: power of two choices
// over a peak-EWMA latency estimate, weighted, over a live endpoint set.
//
// The cost of an endpoint is ewma_rtt * (pending+1) / weight. The RTT
// estimate is peak-sensitive: a sample above it replaces it at once, lower
// samples pull it down with a time constant of DecayTime. An endpoint that
// lost every comparison gets no samples, so its estimate would stay at its
// worst: while an endpoint has nothing in flight its estimate decays
// towards zero at read time, slowly (DecayTime) for StaleAfter and then
// fast (StaleDecay), until it wins a comparison and a request tells how it
// is now (stale.go).
//
// On top of P2C: circuit breaking (breaker.go: failing endpoints are
// ejected, then probed back), slow start (new endpoints ramp up) and zone
// preference (zone.go). Config carries a Service's settings (config.go).
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
	// DefaultRTT is the estimate of a new endpoint while its first request
	// is in flight (idle, it costs nothing: stale.go): modest, so a new
	// endpoint is measured at once without being flooded.
	DefaultRTT = 10 * time.Millisecond
	// DecayTime is the time constant with which lower samples pull the
	// estimate down.
	DecayTime = 10 * time.Second
	// maxRTT caps the estimate so repeated failure penalties stay finite.
	maxRTT = 30 * time.Second
)

// Endpoint is one address a destination can be reached at.
type Endpoint struct {
	Addr     string      // "ip:port" to dial
	Weight   uint32      // >= 1 (0 is treated as 1)
	Identity identity.ID // zero: not meshed, plain TCP
	// ServerName is the TLS server name to send when it is not the
	// identity's DNS form: a multicluster gateway's routing name. The
	// peer's identity is verified the same either way.
	ServerName string
	Protocol   apiv1.ProtocolHint_Protocol
	Zone       string
	TargetPort uint32
	Labels     map[string]string
}

// stats is the load state of one address. It outlives Update calls that
// keep the address, so the estimate, in-flight count, breaker and age carry
// over.
type stats struct {
	pending atomic.Int64
	out     atomic.Bool // ejected or being probed: not in ordinary picks
	refused atomic.Bool // the floor refused to eject it; cleared by a success

	// added and ramp never change: when the address joined, and whether
	// it joined a live set (slow start) rather than the first one.
	added int64
	ramp  bool

	mu      sync.Mutex
	rttNs   float64 // peak-EWMA estimate, nanoseconds
	stamp   int64   // when rttNs was last written, nanoseconds on the balancer clock
	sampled bool    // rttNs was measured, not DefaultRTT
	meanNs  float64 // plain EWMA of the samples (zone.go), once sampled

	// Circuit breaker (breaker.go), under mu.
	consecutive int
	win         window
	state       breakerState
	until       int64 // end of the ejection, while open
	ejections   int   // ejections in a row: the backoff's exponent
}

// node is an immutable pairing of an endpoint's metadata with its stats.
type node struct {
	ep     Endpoint
	weight float64
	local  bool // in the balancer's zone
	st     *stats
}

// snapshot is an immutable endpoint set: every node, and those of the
// balancer's zone.
type snapshot struct {
	all, local, remote []*node // remote: not local, with the zone known or not
	zoned              bool    // the client's zone is known
}

// Balancer is safe for concurrent use. Pick and Done take no balancer-wide
// lock on the common path: the endpoint set is an immutable snapshot
// swapped atomically; ejections and probes take ejectMu, rarely.
type Balancer struct {
	nodes atomic.Pointer[snapshot]
	cfg   atomic.Pointer[Config]
	rng   *rand.Rand // over an atomic splitmix64 source: lock-free and race-free
	zone  string     // under updateMu: the client's zone; "" turns zone preference off

	updateMu sync.Mutex // serialises Update
	seeded   bool       // under updateMu: a non-empty set was applied
	seededAt int64      // under updateMu: when (b.now)

	ejectMu   sync.Mutex   // serialises breaker transitions that count
	outs      atomic.Int64 // endpoints out (ejected or probing)
	nextProbe atomic.Int64 // earliest end of an ejection; MaxInt64: none

	zoneNext atomic.Int64 // when the zone verdict is next evaluated
	explored atomic.Int64 // when a pick last went over every zone to explore
	spilling atomic.Bool  // the local zone is degraded: pick over all zones

	ejectionsTotal, floorHits, picks, crossZone atomic.Uint64

	start time.Time
	now   func() int64 // nanoseconds since start; replaced by tests
}

// Option configures New.
type Option func(*Balancer)

// WithZone makes the balancer prefer endpoints whose Zone is zone (the
// client's), while they are healthy (zone.go).
func WithZone(zone string) Option { return func(b *Balancer) { b.zone = zone } }

// WithConfig sets the initial Config (default: DefaultConfig()).
func WithConfig(c Config) Option { return func(b *Balancer) { b.cfg.Store(&c) } }

// New returns an empty Balancer.
func New(opts ...Option) *Balancer {
	b := &Balancer{start: time.Now()}
	b.now = func() int64 { return int64(time.Since(b.start)) }
	src := &splitmix{}
	src.state.Store(rand.Uint64())
	b.rng = rand.New(src)
	b.nodes.Store(&snapshot{})
	b.nextProbe.Store(math.MaxInt64)
	b.explored.Store(-int64(exploreEvery)) // the first zoned pick explores
	cfg := DefaultConfig()
	b.cfg.Store(&cfg)
	for _, o := range opts {
		o(b)
	}
	return b
}

// SetConfig replaces the Config; picks in flight are unaffected.
func (b *Balancer) SetConfig(c Config) { b.cfg.Store(&c) }

// Config returns the current Config.
func (b *Balancer) Config() Config { return *b.cfg.Load() }

// splitmix is a goroutine-safe rand.Source: one atomic add per number.
type splitmix struct{ state atomic.Uint64 }

func (s *splitmix) Uint64() uint64 {
	z := s.state.Add(0x9e3779b97f4a7c15)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Update replaces the endpoint set. Addresses that stay keep their latency
// estimate, in-flight count, breaker and age; metadata (weight,
// identity...) is taken from eps. Picks in flight are unaffected.
// Duplicate addresses: the last one wins. Addresses new to a set that has
// been non-empty for a slow-start window ramp up (slow start); those of
// the first set, and those that join within a window of it, do not: a
// proxy's restart, or a service starting with its endpoints ready one by
// one, must not leave all but the first starved for a window.
func (b *Balancer) Update(eps []Endpoint) {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	old := b.nodes.Load().all
	byAddr := make(map[string]*stats, len(old))
	for _, n := range old {
		byAddr[n.ep.Addr] = n.st
	}
	index := make(map[string]int, len(eps))
	nodes := make([]*node, 0, len(eps))
	now := b.now()
	ramp := b.seeded && now-b.seededAt >= int64(b.cfg.Load().SlowStart.Window)
	for _, ep := range eps {
		if ep.Weight == 0 {
			ep.Weight = 1
		}
		st, ok := byAddr[ep.Addr]
		if !ok {
			st = &stats{rttNs: float64(DefaultRTT), stamp: now, added: now, ramp: ramp}
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
	b.store(nodes)
	if !b.seeded && len(nodes) > 0 {
		b.seeded, b.seededAt = true, now
	}
}

// SetZone sets the client's zone ("": no zone preference); see WithZone.
func (b *Balancer) SetZone(zone string) {
	b.updateMu.Lock()
	defer b.updateMu.Unlock()
	b.zone = zone
	old := b.nodes.Load().all
	nodes := make([]*node, len(old))
	for i, n := range old {
		c := *n
		nodes[i] = &c
	}
	b.store(nodes)
}

// store publishes fresh nodes as the endpoint set, marking those of the
// zone. Called with updateMu held.
func (b *Balancer) store(nodes []*node) {
	snap := &snapshot{all: nodes, zoned: b.zone != ""}
	for _, n := range nodes {
		n.local = snap.zoned && n.ep.Zone == b.zone
		if n.local {
			snap.local = append(snap.local, n)
		} else {
			snap.remote = append(snap.remote, n)
		}
	}
	b.nodes.Store(snap)
	b.ejectMu.Lock()
	b.recount()
	b.ejectMu.Unlock()
}

// Endpoints returns a copy of the current set.
func (b *Balancer) Endpoints() []Endpoint {
	nodes := b.nodes.Load().all
	out := make([]Endpoint, len(nodes))
	for i, n := range nodes {
		out[i] = n.ep
	}
	return out
}

// Len returns the number of endpoints.
func (b *Balancer) Len() int { return len(b.nodes.Load().all) }

// Pick is one chosen endpoint. Call Done exactly once when the request (or
// connection attempt) ends; further calls are ignored.
type Pick struct {
	Endpoint Endpoint

	st    *stats
	b     *Balancer
	start int64
	idle  bool // nothing else was in flight to the endpoint when picked
	probe bool // the request that decides whether an ejected endpoint is back
	done  atomic.Bool
}

// Pick chooses an endpoint: an ejected one whose backoff has ended (the
// probe), else two distinct random candidates among the endpoints not out
// (those of the client's zone unless it is degraded), the cheaper wins.
// skip holds Addrs to avoid (endpoints a retry already failed on); if
// every endpoint is skipped, Pick returns ErrNoEndpoints.
func (b *Balancer) Pick(skip map[string]bool) (*Pick, error) {
	snap := b.nodes.Load()
	now := b.now()
	if b.outs.Load() > 0 {
		if n := b.probe(snap.all, skip, now); n != nil {
			return b.take(snap, n, now, true), nil
		}
	}
	n := b.choose(snap, skip, now)
	if n == nil {
		return nil, ErrNoEndpoints
	}
	return b.take(snap, n, now, false), nil
}

func (b *Balancer) take(snap *snapshot, n *node, now int64, probe bool) *Pick {
	idle := n.st.pending.Add(1) == 1
	b.picks.Add(1)
	if snap.zoned && !n.local && n.ep.Zone != "" {
		b.crossZone.Add(1)
	}
	return &Pick{Endpoint: n.ep, st: n.st, b: b, start: now, idle: idle, probe: probe}
}

// choose is P2C over the zone's endpoints not out, else every endpoint not
// out, else (all left are out: better one than none) every endpoint.
func (b *Balancer) choose(snap *snapshot, skip map[string]bool, now int64) *node {
	ss := &b.cfg.Load().SlowStart
	set := snap.all
	if len(snap.local) > 0 && len(snap.local) < len(snap.all) && len(skip) == 0 {
		set = b.zoneSet(snap, now)
	}
	if len(skip) == 0 && b.outs.Load() == 0 {
		return b.pickFrom(set, ss, now)
	}
	if n := b.pickEligible(set, skip, true, ss, now); n != nil {
		return n
	}
	if n := b.pickEligible(snap.all, skip, true, ss, now); n != nil {
		return n
	}
	return b.pickEligible(snap.all, skip, false, ss, now)
}

func (b *Balancer) pickFrom(nodes []*node, ss *SlowStart, now int64) *node {
	switch len(nodes) {
	case 0:
		return nil
	case 1:
		return nodes[0]
	}
	i, j := b.two(len(nodes))
	return b.cheaper(nodes[i], nodes[j], ss, now)
}

// pickEligible counts the eligible endpoints (not skipped; not out if
// healthy) and picks two of them by rank, with no allocation.
func (b *Balancer) pickEligible(nodes []*node, skip map[string]bool, healthy bool, ss *SlowStart, now int64) *node {
	ok := func(n *node) bool { return !skip[n.ep.Addr] && !(healthy && n.st.out.Load()) }
	eligible := 0
	var last *node
	for _, n := range nodes {
		if ok(n) {
			eligible++
			last = n
		}
	}
	if eligible < 2 {
		return last
	}
	i, j := b.two(eligible)
	var x, y *node
	k := 0
	for _, n := range nodes {
		if !ok(n) {
			continue
		}
		if k == i {
			x = n
		}
		if k == j {
			y = n
		}
		k++
	}
	// An endpoint ejected meanwhile shifts the ranks: take what was found.
	switch {
	case x == nil:
		return y
	case y == nil:
		return x
	}
	return b.cheaper(x, y, ss, now)
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

// cheaper returns the cheaper of x and y. A candidate still ramping up
// (slow start) takes part only with the probability of its ramp factor,
// so its share of traffic grows with it rather than jumping when its
// cost comes level.
func (b *Balancer) cheaper(x, y *node, ss *SlowStart, now int64) *node {
	if !b.admitted(x, ss, now) {
		return y
	}
	if !b.admitted(y, ss, now) {
		return x
	}
	if x.cost(now) <= y.cost(now) {
		return x
	}
	return y
}

func (b *Balancer) admitted(n *node, ss *SlowStart, now int64) bool {
	if !n.st.ramp || ss.Window <= 0 || now-n.st.added >= int64(ss.Window) {
		return true
	}
	return b.rng.Float64() < ss.factor(now-n.st.added)
}

// cost is what P2C compares: the latency estimate (decayed if stale, none
// if never measured: stale.go) times the requests the endpoint would have
// in flight, over its weight.
func (n *node) cost(now int64) float64 {
	pending := n.st.pending.Load()
	n.st.mu.Lock()
	rtt := n.st.rttNs
	if pending == 0 {
		rtt = n.st.idleEstimate(now)
	}
	n.st.mu.Unlock()
	return rtt * float64(pending+1) / n.weight
}

// factor is the share of its weight an endpoint of this age gets.
func (ss *SlowStart) factor(age int64) float64 {
	if age >= int64(ss.Window) {
		return 1
	}
	f := float64(max(age, 0)) / float64(ss.Window)
	if ss.Aggression > 0 && ss.Aggression != 1 {
		f = math.Pow(f, 1/ss.Aggression)
	}
	return math.Max(f, ss.MinWeight)
}

// Done releases the pick and feeds its latency to the estimate and its
// outcome to the circuit breaker. rtt <= 0 means "measure it": the time
// since Pick. A failure never lowers the estimate; where no breaker can
// eject the endpoint it counts as a sample of at least twice the estimate,
// so an endpoint that keeps failing fast does not attract traffic (the
// penalty decays like any peak). failed is what the caller counts as the
// endpoint's fault (docs/traffic.md, "Circuit breaking").
func (p *Pick) Done(rtt time.Duration, failed bool) {
	if p == nil || !p.done.CompareAndSwap(false, true) {
		return
	}
	now := p.b.now()
	if rtt <= 0 {
		rtt = time.Duration(now - p.start)
	}
	penalty := noPenalty
	if failed {
		// While the breaker can act on failures it owns them: a failure
		// only never lowers the estimate, so an endpoint failing fast
		// keeps its share until it is ejected, in a few requests. Without
		// a breaker (accrual off, or the floor refused to eject it) the
		// latency penalty is what keeps traffic away from it.
		penalty = keepEstimate
		if p.b.cfg.Load().Accrual.Off() || p.st.refused.Load() {
			penalty = doubleEstimate
		}
	}
	p.st.observe(float64(rtt), penalty, now, stalePick{idle: p.idle, at: p.start})
	p.st.pending.Add(-1)
	p.b.settle(p, failed, rtt, now)
}

// What a failure does to the latency estimate.
const (
	noPenalty      = iota
	keepEstimate   // the sample is at least the estimate
	doubleEstimate // the sample is at least twice the estimate (and DefaultRTT)
)

// observe feeds one sample to the estimate. from is how the request was
// picked: the answer to a pick of a stale endpoint sets the estimate
// (stale.go).
func (st *stats) observe(sample float64, penalty int, now int64, from stalePick) {
	st.mu.Lock()
	defer st.mu.Unlock()
	elapsed := max(now-st.stamp, 0)
	cur := st.rttNs
	stale := from.idle && from.at-st.stamp > int64(StaleAfter)
	if stale {
		cur = decayed(cur, from.at-st.stamp)
	}
	switch penalty {
	case keepEstimate:
		sample = math.Max(sample, cur)
	case doubleEstimate:
		// From the stored peak: failures in a row compound, so an
		// endpoint that keeps failing is tried ever less often.
		sample = math.Max(sample, 2*math.Max(st.rttNs, float64(DefaultRTT)))
	}
	if sample >= cur || stale || !st.sampled {
		// Peak: take bad news at once. The first sample, and the first
		// after a stale spell, replace what was a guess or is old news
		// (averaged with it, it would linger for tens of seconds): an
		// estimate too low is corrected by the next higher sample.
		cur = sample
	} else {
		// Time-based EWMA: good news moves the estimate with time constant
		// DecayTime whatever the request rate.
		w := expNeg(float64(elapsed) / float64(DecayTime))
		cur = cur*w + sample*(1-w)
	}
	st.rttNs = math.Min(cur, float64(maxRTT))
	if w := expNeg(float64(elapsed) / float64(meanDecay)); st.sampled {
		st.meanNs = st.meanNs*w + math.Min(sample, float64(maxRTT))*(1-w)
	} else {
		st.meanNs = math.Min(sample, float64(maxRTT))
	}
	st.stamp, st.sampled = now, true
}

// Status is a Balancer's state for metrics and `trellis check`.
type Status struct {
	Ejected   []string // Addrs out of picks (ejected or being probed)
	Ejections uint64   // ejections so far
	FloorHits uint64   // ejections the floor refused
	Picks     uint64
	CrossZone uint64 // picks outside the client's zone (known zones only)
	Spilling  bool   // the client's zone is degraded
}

// Status returns the current Status.
func (b *Balancer) Status() Status {
	s := Status{
		Ejections: b.ejectionsTotal.Load(), FloorHits: b.floorHits.Load(),
		Picks: b.picks.Load(), CrossZone: b.crossZone.Load(), Spilling: b.spilling.Load(),
	}
	if b.outs.Load() == 0 {
		return s
	}
	// Ejections and probe verdicts change the set under ejectMu: read it
	// whole, never half before and half after one (which could show more
	// endpoints out than the floor allows).
	b.ejectMu.Lock()
	defer b.ejectMu.Unlock()
	for _, n := range b.nodes.Load().all {
		if n.st.out.Load() {
			s.Ejected = append(s.Ejected, n.ep.Addr)
		}
	}
	return s
}
