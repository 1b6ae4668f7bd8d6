package balance

import "time"

// Zone preference: while the client's zone is healthy, picks stay among
// its endpoints; when it degrades they spill over every zone's. The
// verdict is taken at most every zoneEvalEvery, by one pick. The zone
// spills when:
//   - half its endpoints or more are out (ejected);
//   - its mean latency estimate is above spillAbove times the other zones'
//     (failures count as slow samples); it comes back below returnBelow;
//   - its endpoints are too few for the load: more than maxLocalPending
//     requests in flight per endpoint (back below half that).
//
// Latency is compared with what was measured: other zones' endpoints that
// have never answered do not count (their estimate is a guess), and while
// the zone is preferred one pick every exploreEvery goes to another zone,
// so their estimates stay current at the cost of a trickle of cross-zone
// requests. The latency compared is a plain EWMA of the samples (time
// constant meanDecay), not P2C's peak-sensitive estimate, whose single
// slow outliers would make a zone look degraded; and it is not decayed
// for idleness, which would make idle zones look ever faster.

const (
	zoneEvalEvery   = 100 * time.Millisecond
	exploreEvery    = 10 * time.Second
	spillAbove      = 2.0
	returnBelow     = 1.5
	maxLocalPending = 16
	meanDecay       = time.Second
)

// zoneSet is the set a pick chooses from: the zone's endpoints, every
// endpoint when the zone is degraded, the other zones' when this pick
// explores.
func (b *Balancer) zoneSet(snap *snapshot, now int64) []*node {
	if b.spill(snap, now) {
		return snap.all
	}
	if last := b.explored.Load(); now-last >= int64(exploreEvery) && b.explored.CompareAndSwap(last, now) {
		return snap.remote
	}
	return snap.local
}

// spill reports whether picks should leave the local zone.
func (b *Balancer) spill(snap *snapshot, now int64) bool {
	next := b.zoneNext.Load()
	if now < next || !b.zoneNext.CompareAndSwap(next, now+int64(zoneEvalEvery)) {
		return b.spilling.Load()
	}
	s := zoneVerdict(snap, b.spilling.Load())
	b.spilling.Store(s)
	return s
}

func zoneVerdict(snap *snapshot, spilling bool) bool {
	var local, remote zoneLoad
	for _, n := range snap.all {
		if n.st.out.Load() {
			continue
		}
		if n.local {
			local.add(n)
		} else {
			remote.add(n)
		}
	}
	if remote.healthy == 0 {
		return false // nowhere to spill to
	}
	if local.healthy*2 <= len(snap.local) {
		return true
	}
	ratio, pendingMax := spillAbove, float64(maxLocalPending)
	if spilling {
		ratio, pendingMax = returnBelow, maxLocalPending/2
	}
	if local.pending/float64(local.healthy) > pendingMax {
		return true
	}
	return local.sampled > 0 && remote.sampled > 0 &&
		local.rtt/float64(local.sampled) > ratio*remote.rtt/float64(remote.sampled)
}

// zoneLoad sums a zone's endpoints not out.
type zoneLoad struct {
	healthy, sampled int
	rtt, pending     float64 // rtt: of the sampled endpoints
}

func (z *zoneLoad) add(n *node) {
	z.healthy++
	z.pending += float64(n.st.pending.Load())
	n.st.mu.Lock()
	rtt, sampled := n.st.meanNs, n.st.sampled
	n.st.mu.Unlock()
	if sampled {
		z.sampled++
		z.rtt += rtt
	}
}
