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

// TestGradientProtectsApp simulates an app that serves 40 requests at once
// in 10 ms and queues the rest (latency 10 ms x in flight / 40), called
// by 20 clients, then by 200 for 100 windows (closed loop): the limit,
// learning nothing but latency, stays between the app's capacity and 2.5
// times it, keeping latency under 2.5 times the unloaded one, where no
// limit would let it reach 50 ms. (Over many more windows the long-term
// average follows the loaded latency, as Gradient2's does: the bound holds
// for a burst of overload, not for ever.)
func TestGradientProtectsApp(t *testing.T) {
	const capacity, base = 40, 10 * time.Millisecond
	latency := func(inFlight int) time.Duration {
		if inFlight <= capacity {
			return base
		}
		return base * time.Duration(inFlight) / capacity
	}
	window := 100 * time.Millisecond
	g := NewGradient(0, 0, window, t0)
	now := t0
	run := func(clients, windows int) (inFlight int) {
		for range windows {
			inFlight = min(clients, g.Limit())
			rtt := latency(inFlight)
			n := int(time.Duration(inFlight) * window / rtt) // completions in the window
			for i := range n {
				g.Sample(now.Add(time.Duration(i)*window/time.Duration(n+1)), rtt, inFlight)
			}
			now = now.Add(window)
			g.Sample(now, rtt, inFlight)
		}
		return inFlight
	}
	run(20, 30)
	if g.Limit() != DefaultInitialLimit {
		t.Fatalf("light load moved the limit to %d", g.Limit())
	}
	inFlight := run(200, 100)
	t.Logf("limit %d, in flight %d, latency %v (without a limit: %v)", g.Limit(), inFlight, latency(inFlight), latency(200))
	if g.Limit() < capacity || g.Limit() > capacity*5/2 || latency(inFlight) > base*5/2 {
		t.Errorf("limit %d, latency %v: want the limit within [%d, %d] and latency under %v", g.Limit(), latency(inFlight), capacity, capacity*5/2, base*5/2)
	}
}
