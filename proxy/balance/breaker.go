package balance

import (
	"math"
	"time"
)

// Circuit breaking: an endpoint whose failures accrue past its Service's
// Accrual is ejected (left out of picks) for a backoff that doubles with
// each ejection in a row; when it ends, one live request probes it: a
// success closes the breaker, a failure ejects it again for longer. At
// most maxEjectFraction of the endpoints are out at once (so never the
// last one), so a fault shared by every endpoint ejects only some.

const (
	baseEjection     = time.Second
	maxEjection      = 60 * time.Second
	maxEjectFraction = 0.5
	// windowBuckets slice the failure-rate window.
	windowBuckets = 10
)

type breakerState uint8

const (
	closed  breakerState = iota
	open                 // ejected until stats.until
	probing              // one request in flight decides
)

// window counts requests and failures over windowBuckets slices of a
// sliding window.
type window struct {
	b [windowBuckets]bucket
}

type bucket struct {
	slot          int64
	total, failed uint32
}

func (w *window) add(now, width int64, failed bool) {
	slot := now / width
	bk := &w.b[slot%windowBuckets]
	if bk.slot != slot {
		*bk = bucket{slot: slot}
	}
	bk.total++
	if failed {
		bk.failed++
	}
}

func (w *window) sum(now, width int64) (total, failed uint32) {
	slot := now / width
	for _, bk := range w.b {
		if slot-bk.slot < windowBuckets {
			total += bk.total
			failed += bk.failed
		}
	}
	return total, failed
}

// record accrues one outcome; it reports whether the endpoint should be
// ejected. Called with st.mu held, only while the breaker is closed.
func (st *stats) record(a *Accrual, failed bool, now int64) bool {
	if a.Off() {
		return false
	}
	if failed {
		st.consecutive++
	} else {
		st.consecutive = 0
		st.refused.Store(false)
	}
	if a.Consecutive > 0 && st.consecutive >= a.Consecutive {
		return true
	}
	if a.Ratio <= 0 {
		return false
	}
	width := max(int64(a.Window)/windowBuckets, 1)
	st.win.add(now, width, failed)
	if !failed {
		return false
	}
	total, nf := st.win.sum(now, width)
	return int(total) >= a.MinRequests && float64(nf) > a.Ratio*float64(total)
}

// resetAccrual forgets past outcomes: after an ejection the endpoint is
// judged on what it does next.
func (st *stats) resetAccrual() {
	st.consecutive = 0
	st.win = window{}
}

// backoff is the ejection time after n ejections in a row: 1s doubling to
// 60s, jittered down by up to a quarter so that endpoints ejected together
// are not probed together.
func (b *Balancer) backoff(n int) int64 {
	d := float64(maxEjection)
	if n <= 7 {
		d = math.Min(float64(baseEjection)*float64(uint64(1)<<(n-1)), d)
	}
	return int64(d * (0.75 + 0.25*b.rng.Float64()))
}

// settle updates the breaker after a request of latency rtt: accrual while
// closed, the verdict of a probe.
func (b *Balancer) settle(p *Pick, failed bool, rtt time.Duration, now int64) {
	st := p.st
	if p.probe {
		b.ejectMu.Lock()
		defer b.ejectMu.Unlock()
		st.mu.Lock()
		if failed {
			st.ejections++
			st.state, st.until = open, now+b.backoff(st.ejections)
			b.ejectionsTotal.Add(1)
		} else {
			st.state, st.ejections = closed, 0
			st.out.Store(false)
			st.resetAccrual()
			// The failures' latency penalty would keep a recovered
			// endpoint starved: its estimate restarts from the probe.
			st.rttNs, st.stamp = float64(rtt), now
		}
		st.mu.Unlock()
		b.recount()
		return
	}
	cfg := b.cfg.Load()
	st.mu.Lock()
	trip := st.state == closed && st.record(&cfg.Accrual, failed, now)
	st.mu.Unlock()
	if trip {
		b.eject(st, now)
	}
}

// eject opens st's breaker unless the floor forbids it.
func (b *Balancer) eject(st *stats, now int64) {
	b.ejectMu.Lock()
	defer b.ejectMu.Unlock()
	snap := b.nodes.Load()
	outs, member := 0, false
	for _, n := range snap.all {
		if n.st.out.Load() {
			outs++
		}
		member = member || n.st == st
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !member || st.state != closed {
		return
	}
	st.resetAccrual()
	if float64(outs+1) > maxEjectFraction*float64(len(snap.all)) {
		b.floorHits.Add(1)
		st.refused.Store(true)
		return
	}
	st.ejections++
	st.state, st.until = open, now+b.backoff(st.ejections)
	st.out.Store(true)
	b.ejectionsTotal.Add(1)
	b.outs.Store(int64(outs + 1))
	b.nextProbe.Store(min(b.nextProbe.Load(), st.until))
}

// recount recomputes the number of endpoints out and when the next probe
// is due. Called with ejectMu held.
func (b *Balancer) recount() {
	outs, next := int64(0), int64(math.MaxInt64)
	for _, n := range b.nodes.Load().all {
		if !n.st.out.Load() {
			continue
		}
		outs++
		n.st.mu.Lock()
		if n.st.state == open {
			next = min(next, n.st.until)
		}
		n.st.mu.Unlock()
	}
	b.outs.Store(outs)
	b.nextProbe.Store(next)
}

// probe returns an ejected endpoint whose backoff has ended, now marked as
// probing, or nil. Only called while some endpoint is out.
func (b *Balancer) probe(nodes []*node, skip map[string]bool, now int64) *node {
	if now < b.nextProbe.Load() {
		return nil
	}
	b.ejectMu.Lock()
	defer b.ejectMu.Unlock()
	var due *node
	for _, n := range nodes {
		if due != nil || skip[n.ep.Addr] || !n.st.out.Load() {
			continue
		}
		n.st.mu.Lock()
		if n.st.state == open && now >= n.st.until {
			n.st.state = probing
			due = n
		}
		n.st.mu.Unlock()
	}
	// A due endpoint left out by skip keeps nextProbe due.
	b.recount()
	return due
}
