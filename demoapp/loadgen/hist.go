package loadgen

import (
	"math"
	"sync/atomic"
	"time"
)

// Latency histogram: logarithmic buckets 2 % wide from 1 µs, so a
// quantile is known within 2 % in a fixed 8 KiB however long the run;
// latencies past the last bucket (about 10 minutes) land in it.
const (
	histGrowth  = 1.02
	histBuckets = 1024
)

var logGrowth = math.Log(histGrowth)

type latencyHist struct {
	counts [histBuckets]atomic.Uint64
}

func histBucket(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Log(us)/logGrowth)+1, histBuckets-1)
}

// bucketUpper is the largest latency bucket i holds.
func bucketUpper(i int) time.Duration {
	return time.Duration(math.Pow(histGrowth, float64(i)) * float64(time.Microsecond))
}

func (h *latencyHist) observe(d time.Duration) { h.counts[histBucket(d)].Add(1) }

// quantile returns the latency under which a share q (0..1) of the
// observations fall: the upper bound of the bucket holding the q-th one,
// at most largest (the largest seen). 0 without observations.
func (h *latencyHist) quantile(q float64, largest time.Duration) time.Duration {
	var snap [histBuckets]uint64
	var n uint64
	for i := range snap {
		snap[i] = h.counts[i].Load()
		n += snap[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i, c := range snap {
		seen += c
		if seen >= rank {
			if i == histBuckets-1 { // open-ended
				return largest
			}
			return min(bucketUpper(i), largest)
		}
	}
	return largest
}
