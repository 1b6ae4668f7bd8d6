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
//
// Other zones' latency counts only when measured within remoteFresh: an
// exploration sample taken seconds ago, on a quiet node, says nothing of
// now (a busy node slows every zone's answers alike). When the local zone
// looks slow against old news, the verdict stands and the next pick
// explores (at most every remoteFresh), so a spill rests on a comparison
// of the same moment.

const (
	zoneEvalEvery   = 100 * time.Millisecond
	exploreEvery    = 10 * time.Second
	spillAbove      = 2.0
	returnBelow     = 1.5
	maxLocalPending = 16
	meanDecay       = time.Second
	remoteFresh     = time.Second
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
	s, refresh := zoneVerdict(snap, b.spilling.Load(), now)
	if refresh {
		// Let the next pick explore, unless one did within remoteFresh.
		if last := b.explored.Load(); now-last >= int64(remoteFresh) {
			b.explored.CompareAndSwap(last, now-int64(exploreEvery))
		}
	}
	b.spilling.Store(s)
	return s
}

// zoneVerdict decides whether picks leave the local zone; refresh: the
// local zone looks slow against other zones' old measurements only, so
// they need a fresh sample before latency can decide.
func zoneVerdict(snap *snapshot, spilling bool, now int64) (spill, refresh bool) {
	var local, remote zoneLoad
	for _, n := range snap.all {
		if n.st.out.Load() {
			continue
		}
		if n.local {
			local.add(n, 0)
		} else {
			remote.add(n, now-int64(remoteFresh))
		}
	}
	if remote.healthy == 0 {
		return false, false // nowhere to spill to
	}
	if local.healthy*2 <= len(snap.local) {
		return true, false
	}
	ratio, pendingMax := spillAbove, float64(maxLocalPending)
	if spilling {
		ratio, pendingMax = returnBelow, maxLocalPending/2
	}
	if local.pending/float64(local.healthy) > pendingMax {
		return true, false
	}
	if local.sampled == 0 {
		return false, false
	}
	slow := func(rtt float64, n int) bool { return n > 0 && local.rtt/float64(local.sampled) > ratio*rtt/float64(n) }
	if slow(remote.rtt, remote.sampled) {
		return true, false
	}
	// Not slow against what other zones measured lately; if slow against
	// what they measured long ago, the answer waits for a fresh sample.
	return spilling && remote.sampled == 0 && slow(remote.staleRTT, remote.stale), slow(remote.staleRTT, remote.stale)
}

// zoneLoad sums a zone's endpoints not out.
type zoneLoad struct {
	healthy, sampled int
	rtt, pending     float64 // rtt: of the endpoints sampled since the cut-off
	stale            int     // endpoints sampled, but last before the cut-off
	staleRTT         float64
}

// add counts n; its latency is fresh when last measured at or after since
// (0: any time).
func (z *zoneLoad) add(n *node, since int64) {
	z.healthy++
	z.pending += float64(n.st.pending.Load())
	n.st.mu.Lock()
	rtt, sampled, stamp := n.st.meanNs, n.st.sampled, n.st.stamp
	n.st.mu.Unlock()
	switch {
	case !sampled:
	case stamp >= since:
		z.sampled++
		z.rtt += rtt
	default:
		z.stale++
		z.staleRTT += rtt
	}
}
