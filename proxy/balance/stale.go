package balance

import (
	"math"
	"time"
)

// Stale estimates. P2C keeps the cheaper of two candidates, so an endpoint
// whose estimate is above every other's loses every comparison (with two
// endpoints it is compared, and loses, on every pick) and gets no sample
// that could lower it: after one slow spell it would stay starved long
// after it recovered. So the estimate of an endpoint with nothing in
// flight decays towards zero with the time since its last sample, at read
// time, as Finagle's and Linkerd's peak-EWMA do: for StaleAfter with the
// EWMA's own time constant DecayTime (so of two endpoints with about the
// same estimate, the one not picked lately comes next), then, stale, with
// the much shorter StaleDecay, until the endpoint wins a comparison and its
// answer sets the estimate afresh (the old one is old news; one too low is
// corrected by the next higher sample, the peak rule): a recovered
// endpoint is back at its fair share, a slow one back at its peak. An endpoint R times slower than the
// others is tried about every StaleAfter + StaleDecay*ln R (R = 100: 5.5
// s), one request at a time: the decay holds while a request is in flight
// (a request that does not answer must not make its endpoint look ever
// faster), and that request's cost counts it.
//
// Only the answer to a pick of a stale endpoint resets the estimate; the
// others are averaged into the stored one, so the decay between the
// samples of a busy endpoint does not bias its estimate down.
const (
	// StaleAfter is how long an endpoint's estimate holds without samples
	// and with nothing in flight before it decays.
	StaleAfter = time.Second
	// StaleDecay is the time constant of the decay of a stale estimate.
	StaleDecay = time.Second
)

// stalePick is what Done needs to know of how the pick saw the estimate:
// whether nothing else was in flight (so the pick saw it decayed), and when.
type stalePick struct {
	idle bool
	at   int64
}

// decayed is the estimate rtt after elapsed nanoseconds without a sample,
// the endpoint idle: e^-(elapsed/DecayTime) for StaleAfter, then
// e^-(StaleAfter/DecayTime + (elapsed-StaleAfter)/StaleDecay).
func decayed(rtt float64, elapsed int64) float64 {
	switch {
	case elapsed <= 0:
		return rtt
	case elapsed <= int64(StaleAfter):
		return rtt * expNeg(float64(elapsed)/float64(DecayTime))
	}
	x := float64(StaleAfter)/float64(DecayTime) + float64(elapsed-int64(StaleAfter))/float64(StaleDecay)
	return rtt * expNeg(x)
}

// idleEstimate is the estimate of an endpoint with nothing in flight.
func (st *stats) idleEstimate(now int64) float64 {
	if !st.sampled {
		return 0
	}
	return decayed(st.rttNs, now-st.stamp)
}

// expNeg is e^-x; for the tiny x of back-to-back requests a series is exact
// enough (error < x^3/6) and much cheaper than math.Exp.
func expNeg(x float64) float64 {
	if x < 1e-3 {
		return 1 - x + x*x/2
	}
	return math.Exp(-x)
}
