package ratelimit

import (
	"testing"
	"time"
)

// feed runs windows of n requests each of latency rtt with inFlight in
// flight, and returns the limit after them.
func feed(g *Gradient, start time.Time, windows, n int, rtt time.Duration, inFlight int) (int, time.Time) {
	now := start
	for range windows {
		for i := range n {
			g.Sample(now.Add(time.Duration(i)*time.Millisecond), rtt, inFlight)
		}
		now = now.Add(g.window)
		g.Sample(now, rtt, inFlight) // closes the window
	}
	return g.Limit(), now
}

// TestGradient: the limit grows while latency holds and the limit is
// used, stays while the app is under-used, shrinks when latency rises
// (towards half, never below min), and never passes max; a window with
// too few samples changes nothing.
func TestGradient(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct {
		name             string
		min, max         uint32
		warm             time.Duration // latency of 20 windows at full use first
		rtt              time.Duration
		windows, samples int
		inFlightOfLimit  float64 // in flight, as a share of the limit at the start
		wantMin, wantMax int
	}{
		{"steady latency, used: grows by sqrt(limit) a window", 0, 0, 10 * ms, 10 * ms, 5, 20, 1, 150, 160},
		{"grows to max, no further", 0, 300, 10 * ms, 10 * ms, 50, 20, 10, 300, 300},
		{"under-used: stays", 0, 0, 0, 10 * ms, 20, 20, 0.1, 100, 100},
		{"latency tripled: shrinks", 0, 0, 10 * ms, 30 * ms, 10, 20, 1, 20, 180},
		{"latency five times: down to min", 80, 0, 10 * ms, 50 * ms, 30, 20, 1, 80, 80},
		{"latency five times, min 20", 0, 0, 10 * ms, 50 * ms, 30, 20, 1, 20, 60},
		{"too few samples a window: no change", 0, 0, 0, 10 * ms, 20, MinWindowSamples - 2, 1, 100, 100},
		{"latency within tolerance: no shrink", 0, 0, 10 * ms, 14 * ms, 5, 20, 1, 100, 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGradient(tt.min, tt.max, 100*ms, t0)
			now := t0
			if tt.warm > 0 {
				g.limit = 100
				_, now = feed(g, now, 20, 20, tt.warm, 100)
				g.limit = 100 // measure from the same start
			}
			got, _ := feed(g, now, tt.windows, tt.samples, tt.rtt, int(tt.inFlightOfLimit*float64(g.Limit())))
			if got < tt.wantMin || got > tt.wantMax {
				t.Errorf("limit %d, want within [%d, %d]", got, tt.wantMin, tt.wantMax)
			}
		})
	}
}

// TestGradientBounds: defaults, min above max, and the initial limit
// within them.
func TestGradientBounds(t *testing.T) {
	for _, tt := range []struct {
		min, max  uint32
		wantLimit int
	}{
		{0, 0, DefaultInitialLimit},
		{0, 50, 50},
		{200, 0, 200},
		{80, 40, 40},
		{0, 10, 10},
	} {
		if g := NewGradient(tt.min, tt.max, 0, t0); g.Limit() != tt.wantLimit || g.min > g.max {
			t.Errorf("NewGradient(%d, %d): limit %d (min %v max %v), want %d", tt.min, tt.max, g.Limit(), g.min, g.max, tt.wantLimit)
		}
	}
}
