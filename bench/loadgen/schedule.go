// Package loadgen is an open-loop load generator: requests have intended
// send times on a fixed schedule, and latency is recorded both from the
// intended time (corrected for coordinated omission) and from the actual
// send (uncorrected).
package loadgen

import (
	"math"
	"time"
)

// Schedule is a fixed-rate sequence of intended send times.
type Schedule struct {
	Start time.Time
	Rate  float64 // requests per second, > 0
}

// At is the intended send time of request i (0-based). It is computed from i
// rather than by adding an interval repeatedly, so rounding never drifts.
func (s Schedule) At(i int64) time.Time {
	return s.Start.Add(time.Duration(math.Round(float64(i) * 1e9 / s.Rate)))
}

// Count is the number of requests whose intended time falls in [Start, Start+d).
func (s Schedule) Count(d time.Duration) int64 {
	if d <= 0 || s.Rate <= 0 {
		return 0
	}
	// The epsilon keeps exact products (2s at 1000 rps) from rounding down.
	return int64(math.Ceil(d.Seconds()*s.Rate - 1e-9))
}
