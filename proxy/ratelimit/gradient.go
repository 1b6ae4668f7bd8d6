package ratelimit

import (
	"math"
	"time"
)

// Defaults of the adaptive concurrency limit.
const (
	DefaultMinLimit = 20
	DefaultMaxLimit = 1000
	// DefaultInitialLimit is where a new limit starts (within min and
	// max): high enough not to refuse a healthy app's normal load while
	// the limit learns, low enough to protect a small one at once.
	DefaultInitialLimit = 100
	// DefaultWindow is how often the limit is recomputed from the
	// latencies observed since (Netflix's WindowedLimit uses 1 s).
	DefaultWindow = 500 * time.Millisecond
	// MinWindowSamples: a window with fewer completed requests says
	// nothing and is dropped.
	MinWindowSamples = 10
)

// The gradient's constants, Netflix concurrency-limits Gradient2's.
const (
	// tolerance: latency up to 1.5 times the long-term average is no
	// reason to shrink the limit.
	tolerance = 1.5
	// smoothing of a decrease: a bad window moves the limit a fifth of
	// the way.
	smoothing = 0.2
	// longWindow is the long-term average's span, in windows.
	longWindow = 600
	// warmup windows are averaged plainly before the EMA starts.
	warmup = 10
)

// Gradient is an adaptive concurrency limit after Netflix's Gradient2: per
// window, the average latency (short) is compared to its long-term
// average (long); gradient = clamp(tolerance*long/short, 0.5, 1). The
// limit grows by sqrt(limit) a window while latency holds and the limit
// is used (in flight reached half of it), and shrinks towards
// limit*gradient+sqrt(limit), smoothed, when latency rises: queueing in
// the app shows as latency before it shows as errors. Unlike Gradient2,
// growth is not smoothed, so a limit starting low reaches a busy app's
// concurrency in seconds rather than minutes. Not safe for concurrent use.
type Gradient struct {
	min, max float64
	limit    float64
	window   time.Duration

	long  float64 // long-term average latency, seconds
	longN int

	start       time.Time // of the current window
	sum         float64   // latencies of the window, seconds
	n           int
	maxInFlight int
}

// NewGradient returns a limit between min and max (0: the defaults; min
// above max is max), starting at DefaultInitialLimit within them, with
// windows of window (0: DefaultWindow).
func NewGradient(minLimit, maxLimit uint32, window time.Duration, now time.Time) *Gradient {
	if maxLimit == 0 {
		maxLimit = DefaultMaxLimit
	}
	if minLimit == 0 {
		minLimit = min(DefaultMinLimit, maxLimit)
	}
	minLimit = min(minLimit, maxLimit)
	if window <= 0 {
		window = DefaultWindow
	}
	lo, hi := float64(minLimit), float64(maxLimit)
	return &Gradient{min: lo, max: hi, limit: math.Max(lo, math.Min(hi, DefaultInitialLimit)), window: window, start: now}
}

// Limit is the limit now.
func (g *Gradient) Limit() int { return int(g.limit) }

// Sample records a completed request's latency with inFlight requests in
// flight when it started, and recomputes the limit at the end of a window.
func (g *Gradient) Sample(now time.Time, rtt time.Duration, inFlight int) {
	g.sum += rtt.Seconds()
	g.n++
	g.maxInFlight = max(g.maxInFlight, inFlight)
	if now.Sub(g.start) < g.window {
		return
	}
	if g.n >= MinWindowSamples {
		g.update(g.sum / float64(g.n))
	}
	g.start, g.sum, g.n, g.maxInFlight = now, 0, 0, 0
}

func (g *Gradient) update(short float64) {
	short = math.Max(short, 1e-6)
	g.observeLong(short)
	if g.long/short > 2 {
		// Latency fell well below the long-term average (the app got
		// faster, or warmed up): let the average follow down faster.
		g.long *= 0.95
	}
	if g.maxInFlight < int(g.limit)/2 {
		// The app is not limited by us: latency says nothing of the limit.
		return
	}
	gradient := math.Max(0.5, math.Min(1, tolerance*g.long/short))
	headroom := math.Sqrt(g.limit)
	next := g.limit*gradient + headroom
	if next < g.limit {
		next = g.limit*(1-smoothing) + next*smoothing
	}
	g.limit = math.Max(g.min, math.Min(g.max, next))
}

// observeLong folds a window's latency into the long-term average: a plain
// average for the first windows, then an EMA over longWindow windows.
func (g *Gradient) observeLong(v float64) {
	g.longN++
	if g.longN <= warmup {
		g.long += (v - g.long) / float64(g.longN)
		return
	}
	const f = 2.0 / (longWindow + 1)
	g.long = g.long*(1-f) + v*f
}
