// Package faults injects failures into the demo application so that the
// mesh's success-rate metrics have something to show.
package faults

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Injector decides, per request, whether to fail it on purpose.
// The zero value never fails.
type Injector struct {
	rate float64
	// roll returns a number in [0, 1); replaceable in tests of pure logic.
	roll func() float64
	// failFor, when positive, limits failures to the first failFor of
	// clock (Limit).
	failFor time.Duration
	clock   *Clock
}

// New returns an Injector failing the given share (0.0..1.0) of requests.
func New(rate float64) (*Injector, error) {
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		return nil, fmt.Errorf("fail rate %v: must be between 0.0 and 1.0", rate)
	}
	return &Injector{rate: rate, roll: rand.Float64}, nil
}

// Rate is the configured share of failed requests.
func (i *Injector) Rate() float64 {
	if i == nil {
		return 0
	}
	return i.rate
}

// Limit makes the injector fail only during the first d after the
// clock's first request (d 0: for ever), so that a replica recovers by
// itself: the circuit-breaking demo. Call it before serving.
func (i *Injector) Limit(d time.Duration, clock *Clock) error {
	if d < 0 {
		return fmt.Errorf("fail for %v: must not be negative", d)
	}
	if d > 0 && clock == nil {
		return fmt.Errorf("fail for %v: needs a clock", d)
	}
	i.failFor, i.clock = d, clock
	return nil
}

// Fail reports whether this request should be failed. It marks the
// clock's first request.
func (i *Injector) Fail() bool {
	if i == nil || i.rate <= 0 {
		return false
	}
	if i.failFor > 0 {
		i.clock.Mark()
		if i.clock.Since() >= i.failFor {
			return false
		}
	}
	if i.rate >= 1 {
		return true
	}
	return i.roll() < i.rate
}

// Clock is the time since the app's first request (on Kubernetes the
// kubelet's first readiness probe, just before the pod becomes ready):
// the start of the windows in which the demo app fails (Injector.Limit)
// or is slow (SlowStart). Safe for concurrent use.
type Clock struct {
	now   func() time.Time
	first atomic.Pointer[time.Time]
}

// NewClock returns a Clock reading now (nil: time.Now).
func NewClock(now func() time.Time) *Clock {
	if now == nil {
		now = time.Now
	}
	return &Clock{now: now}
}

// Mark records the first request; later calls change nothing.
func (c *Clock) Mark() {
	if c == nil || c.first.Load() != nil {
		return
	}
	t := c.now()
	c.first.CompareAndSwap(nil, &t)
}

// Since is the time since the first request, 0 before it.
func (c *Clock) Since() time.Duration {
	if c == nil {
		return 0
	}
	first := c.first.Load()
	if first == nil {
		return 0
	}
	return c.now().Sub(*first)
}

// MaxSlowDelay bounds SlowStart.Delay: a demo delay, not a hang.
const MaxSlowDelay = time.Minute

// SlowStart delays every request during the first For of Clock: an app
// that is slow until its caches are warm (the slow-start demo).
type SlowStart struct {
	For, Delay time.Duration
	// Capacity, when positive, is how many requests the app serves at
	// once while slow; the others wait their turn, as a cold app with a
	// small pool queues them (what an adaptive concurrency limit protects).
	Capacity int
	Clock    *Clock

	once  sync.Once
	slots chan struct{}
}

// MaxSlowCapacity bounds SlowStart.Capacity.
const MaxSlowCapacity = 10000

// pool is the channel of Capacity slots, made on first use.
func (s *SlowStart) pool() chan struct{} {
	s.once.Do(func() { s.slots = make(chan struct{}, s.Capacity) })
	return s.slots
}

// Serve holds the request for its slow-start delay, first waiting for
// one of Capacity slots when set. It reports false when ctx ended first.
// Outside the window it returns at once.
func (s *SlowStart) Serve(ctx context.Context) bool {
	d := s.Wait()
	if d <= 0 {
		return true
	}
	if s.Capacity > 0 {
		slots := s.pool()
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		defer func() { <-slots }()
	}
	return Sleep(ctx, d)
}

// Sleep waits d, or less when ctx ends first; it reports whether it
// waited the whole d with ctx still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Validate checks the durations.
func (s *SlowStart) Validate() error {
	if s.For < 0 || s.Delay < 0 || s.Delay > MaxSlowDelay {
		return fmt.Errorf("slow start for %v, delay %v: must not be negative, the delay at most %v", s.For, s.Delay, MaxSlowDelay)
	}
	if s.Capacity < 0 || s.Capacity > MaxSlowCapacity {
		return fmt.Errorf("slow start capacity %d: must be 0 (no limit) to %d", s.Capacity, MaxSlowCapacity)
	}
	return nil
}

// Wait is how long to delay this request: Delay while the window lasts,
// else 0. The caller marks the clock first.
func (s *SlowStart) Wait() time.Duration {
	if s == nil || s.For <= 0 || s.Delay <= 0 || s.Clock.Since() >= s.For {
		return 0
	}
	return s.Delay
}
