package balance

import "time"

// Zone preference: while the client's zone is healthy, picks stay among
// its endpoints; when it degrades they spill over every zone's. The
// verdict is taken at most every zoneEvalEvery, by one pick, from:
//   - ejections: half the zone's endpoints or more out;
//   - load and latency: the zone's mean of rtt*(pending+1)/weight above
//     spillAbove times the other zones' (failures count as slow samples,
//     and in-flight requests as load, so this covers both). A spilled
//     zone comes back below returnBelow times.
//
// The estimate compared is the last one written, not decayed for idleness:
// the other zones get no traffic while the local one is preferred, and a
// decaying estimate would make them look ever faster.

const (
	zoneEvalEvery = 100 * time.Millisecond
	spillAbove    = 2.0
	returnBelow   = 1.5
)

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
	var lc, rc float64
	var lh, rh int
	for _, n := range snap.all {
		if n.st.out.Load() {
			continue
		}
		c := n.load()
		if n.local {
			lh, lc = lh+1, lc+c
		} else {
			rh, rc = rh+1, rc+c
		}
	}
	switch {
	case rh == 0:
		return false // nowhere to spill to
	case lh*2 <= len(snap.local):
		return true
	}
	ratio := (lc / float64(lh)) / (rc / float64(rh))
	if spilling {
		return ratio > returnBelow
	}
	return ratio > spillAbove
}

// load is the endpoint's undecayed cost.
func (n *node) load() float64 {
	n.st.mu.Lock()
	rtt := n.st.rttNs
	n.st.mu.Unlock()
	return rtt * float64(n.st.pending.Load()+1) / n.weight
}
