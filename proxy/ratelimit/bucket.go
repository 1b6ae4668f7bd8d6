package ratelimit

import (
	"math"
	"time"
)

// Bucket is a token bucket: rate tokens a second, at most burst of them,
// full at the start. Not safe for concurrent use (the server's lock
// guards it). The zero Bucket has no limit.
type Bucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

// NewBucket returns a full bucket of rps tokens a second and burst tokens
// (0: rps); rps 0 is no limit.
func NewBucket(rps, burst uint32, now time.Time) Bucket {
	if rps == 0 {
		return Bucket{}
	}
	if burst == 0 {
		burst = rps
	}
	return Bucket{rate: float64(rps), burst: float64(burst), tokens: float64(burst), last: now}
}

// Limited reports whether the bucket limits anything.
func (b *Bucket) Limited() bool { return b.rate > 0 }

// Wait is how long until a token is there at now: 0 when one is.
func (b *Bucket) Wait(now time.Time) time.Duration {
	if !b.Limited() {
		return 0
	}
	b.refill(now)
	if b.tokens >= 1 {
		return 0
	}
	// To the microsecond: float error must not show as 1.000001ms.
	us := math.Round((1 - b.tokens) / b.rate * 1e6)
	return max(time.Microsecond, time.Duration(us)*time.Microsecond)
}

// Take takes a token; call it only after Wait returned 0 at the same now.
func (b *Bucket) Take() {
	if b.Limited() {
		b.tokens--
	}
}

// Full reports whether the bucket is full at now: dropping it and making a
// new one would change nothing.
func (b *Bucket) Full(now time.Time) bool {
	b.refill(now)
	return b.tokens >= b.burst
}

func (b *Bucket) refill(now time.Time) {
	if dt := now.Sub(b.last); dt > 0 {
		b.tokens = min(b.burst, b.tokens+dt.Seconds()*b.rate)
		b.last = now
	}
}
