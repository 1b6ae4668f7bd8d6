package loadgen

import (
	"testing"
	"time"
)

func TestLatencyHistQuantiles(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name    string
		samples map[time.Duration]int // latency -> how many
		q       float64
		want    time.Duration
	}{
		{"empty", nil, 0.99, 0},
		{"one sample", map[time.Duration]int{5 * ms: 1}, 0.5, 5 * ms},
		{"p50 of a bimodal run", map[time.Duration]int{2 * ms: 60, 200 * ms: 40}, 0.5, 2 * ms},
		{"p99 sees the slow 2 %", map[time.Duration]int{2 * ms: 98, 200 * ms: 2}, 0.99, 200 * ms},
		{"p99 misses the slow 0.5 %", map[time.Duration]int{2 * ms: 995, 200 * ms: 5}, 0.99, 2 * ms},
		{"sub-microsecond", map[time.Duration]int{100 * time.Nanosecond: 10}, 0.5, 100 * time.Nanosecond},
		{"beyond the last bucket", map[time.Duration]int{time.Hour: 3}, 0.5, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h latencyHist
			var largest time.Duration
			for d, n := range tt.samples {
				for range n {
					h.observe(d)
				}
				largest = max(largest, d)
			}
			got := h.quantile(tt.q, largest)
			// Within the bucket width: 2 % above the true value, never below.
			if got < tt.want || float64(got) > float64(tt.want)*histGrowth {
				t.Errorf("quantile(%v) = %v, want %v (+2 %%)", tt.q, got, tt.want)
			}
		})
	}
}

func TestHistBucketsAreMonotonic(t *testing.T) {
	prev := -1
	for d := time.Microsecond; d < 20*time.Minute; d = d*21/20 + 1 {
		b := histBucket(d)
		if b < prev || b >= histBuckets {
			t.Fatalf("bucket of %v = %d after %d", d, b, prev)
		}
		if b < histBuckets-1 && bucketUpper(b) < d {
			t.Fatalf("bucket %d ends at %v, below its sample %v", b, bucketUpper(b), d)
		}
		prev = b
	}
}
