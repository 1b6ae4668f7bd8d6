package retry

import (
	"sync"
	"sync/atomic"
	"time"
)

// The budget's sliding window: Buckets buckets of BucketWidth each.
const (
	Buckets     = 10
	BucketWidth = time.Second
	// Window is how far back a budget remembers requests and retries.
	Window = Buckets * BucketWidth
)

// Linkerd's defaults: retries may add 20 % to the load, plus 10 a second.
const (
	DefaultRatio        = 0.2
	DefaultMinPerSecond = 10
)

// Budget bounds the retries to one destination: over the last Window,
// retries may be at most ratio × requests plus minPerSecond × Window. It
// is lock-free: each bucket counter is one word holding the bucket's
// epoch (high 32 bits) and its count (low 32 bits), so a counter of a
// stale second is reset by the same compare-and-swap that counts.
type Budget struct {
	base     time.Time
	requests [Buckets]atomic.Uint64
	retries  [Buckets]atomic.Uint64
	used     atomic.Int64 // epoch of the last use, for sweeping
}

// NewBudget returns an empty budget whose clock starts at base.
func NewBudget(base time.Time) *Budget { return &Budget{base: base} }

// epoch numbers the bucket of now from 1 (0: never used).
func (b *Budget) epoch(now time.Time) uint32 {
	d := now.Sub(b.base)
	if d < 0 {
		d = 0
	}
	return uint32(d/BucketWidth) + 1
}

// Deposit counts an original request (not a retry).
func (b *Budget) Deposit(now time.Time) {
	e := b.epoch(now)
	b.touch(e)
	incr(&b.requests[e%Buckets], e)
}

// Withdraw reports whether a retry is allowed now and, if so, counts it.
// ratio <= 0 and minPerSecond == 0 take the defaults. Concurrent callers
// may overshoot the budget by at most their number (the check and the
// count are two atomic steps).
func (b *Budget) Withdraw(now time.Time, ratio float64, minPerSecond uint32) bool {
	if ratio <= 0 {
		ratio = DefaultRatio
	}
	if minPerSecond == 0 {
		minPerSecond = DefaultMinPerSecond
	}
	e := b.epoch(now)
	b.touch(e)
	allowed := ratio*float64(sum(&b.requests, e)) + float64(minPerSecond)*Window.Seconds()
	if float64(sum(&b.retries, e)) >= allowed {
		return false
	}
	incr(&b.retries[e%Buckets], e)
	return true
}

// touch records a use in epoch e, writing the shared word only once a
// bucket.
func (b *Budget) touch(e uint32) {
	if b.used.Load() != int64(e) {
		b.used.Store(int64(e))
	}
}

// idle reports whether the budget has not been used within the window
// before now: all its counts have expired, so forgetting it loses nothing.
func (b *Budget) idle(now time.Time) bool {
	return int64(b.epoch(now))-b.used.Load() >= Buckets
}

// incr adds one to the counter of epoch e, resetting a stale one.
func incr(c *atomic.Uint64, e uint32) {
	for {
		v := c.Load()
		nv := uint64(e)<<32 | 1
		if uint32(v>>32) == e {
			if uint32(v) == ^uint32(0) {
				return // saturated
			}
			nv = v + 1
		}
		if c.CompareAndSwap(v, nv) {
			return
		}
	}
}

// sum adds the counts of the buckets within the window ending at epoch e.
func sum(cs *[Buckets]atomic.Uint64, e uint32) uint64 {
	var n uint64
	for i := range cs {
		v := cs[i].Load()
		if be := uint32(v >> 32); be != 0 && be <= e && e-be < Buckets {
			n += uint64(uint32(v))
		}
	}
	return n
}

// MaxDestinations bounds the budgets a proxy keeps.
const MaxDestinations = 4096

// Budgets holds one Budget per destination (dst_service) of one client
// proxy. Lookups take no lock; adding a destination does, and sweeps the
// budgets idle for a whole window once MaxDestinations are held, so idle
// destinations do not accumulate.
type Budgets struct {
	base time.Time
	max  int
	m    sync.Map // dst -> *Budget
	mu   sync.Mutex
	n    int // budgets in m, under mu
}

// NewBudgets returns an empty set holding at most max budgets (<= 0:
// MaxDestinations).
func NewBudgets(max int) *Budgets {
	if max <= 0 {
		max = MaxDestinations
	}
	return &Budgets{base: time.Now(), max: max}
}

// Get returns dst's budget, created if needed; nil when max budgets are
// in use within the window (the caller then does not retry).
func (bs *Budgets) Get(dst string, now time.Time) *Budget {
	if v, ok := bs.m.Load(dst); ok {
		return v.(*Budget)
	}
	bs.mu.Lock()
	defer bs.mu.Unlock()
	if v, ok := bs.m.Load(dst); ok {
		return v.(*Budget)
	}
	if bs.n >= bs.max {
		bs.sweep(now)
		if bs.n >= bs.max {
			return nil
		}
	}
	b := NewBudget(bs.base)
	b.used.Store(int64(b.epoch(now)))
	bs.m.Store(dst, b)
	bs.n++
	return b
}

// sweep forgets the budgets idle for a whole window. Under mu.
func (bs *Budgets) sweep(now time.Time) {
	bs.m.Range(func(k, v any) bool {
		if v.(*Budget).idle(now) {
			bs.m.Delete(k)
			bs.n--
		}
		return true
	})
}

// Len is the number of budgets held.
func (bs *Budgets) Len() int {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.n
}
