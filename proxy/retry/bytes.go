package retry

import "sync/atomic"

// DefaultReplayBytes bounds the request bytes a proxy keeps for replay.
const DefaultReplayBytes = 16 << 20

// Bytes is a process-wide bound on the request body bytes kept so that a
// request can be sent again (a semaphore of bytes): without it, 64 KiB
// kept per stream × 1,000 streams per connection × connections could pin
// a lot of memory. When it is spent a body is not kept, and its request
// is not replayable. A nil *Bytes bounds nothing.
type Bytes struct {
	max  int64
	used atomic.Int64
}

// NewBytes returns a bound of max bytes (<= 0: DefaultReplayBytes).
func NewBytes(max int64) *Bytes {
	if max <= 0 {
		max = DefaultReplayBytes
	}
	return &Bytes{max: max}
}

// Acquire takes n bytes if they are free, and reports whether it did.
func (b *Bytes) Acquire(n int64) bool {
	if b == nil || n <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// Release gives back n bytes taken by Acquire.
func (b *Bytes) Release(n int64) {
	if b != nil && n > 0 {
		b.used.Add(-n)
	}
}

// Used is the number of bytes held now.
func (b *Bytes) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}
