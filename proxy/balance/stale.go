package balance

import (
	"math"
	"time"
)

// Stale estimates. P2C keeps the cheaper of two candidates, so an endpoint
// whose estimate is above every other's loses every comparison (with two
// endpoints it is compared, and loses, on every pick) and gets no sample
// that could lower it: after one slow spell it would stay starved long
// after it recovered. So an estimate that has had no sample for StaleAfter
// while nothing was in flight decays towards zero with the time constant
// StaleDecay (at read time, as Finagle's and Linkerd's peak-EWMA decay with
// the time since the last update), until the endpoint wins a comparison
// and its answer sets the estimate again: a recovered endpoint is back at
// its fair share, a slow one is back at its peak. An endpoint R times
// slower than the others is tried about every StaleAfter + StaleDecay*ln R
// (R = 100: 5.6 s), one request at a time: the decay holds while a request
// is in flight (a request that does not answer must not make its endpoint
// look ever faster).
//
// Endpoints with traffic (a sample at least every StaleAfter) are not
// decayed at all: their estimate is the plain peak-EWMA of their samples.
// An endpoint never measured costs nothing while idle (as in Finagle):
// DefaultRTT is a guess, and the endpoints a set's first picks happened to
// measure must not keep the others from being measured. It is measured one
// request at a time: with one in flight its cost is DefaultRTT * (pending+1).

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
// the endpoint idle.
func decayed(rtt float64, elapsed int64) float64 {
	if elapsed <= int64(StaleAfter) {
		return rtt
	}
	return rtt * expNeg(float64(elapsed-int64(StaleAfter))/float64(StaleDecay))
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
