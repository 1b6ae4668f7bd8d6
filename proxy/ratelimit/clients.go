package ratelimit

import "time"

// DefaultMaxClients bounds the per-client buckets of one server (about
// 150 bytes each): a caller cannot prove more identities than the mesh
// issues, but the bound holds whatever the trust domain does.
const DefaultMaxClients = 4096

// clients is the perClient buckets of one server, one per mesh identity
// (callers without mesh TLS share the one of ""), at most max of them.
// A bucket full again is dropped (a new one would be full too: nothing
// changes); past max with none to drop, new identities share one
// overflow bucket. Not safe for concurrent use (the server's lock).
type clients struct {
	rps, burst uint32
	max        int
	m          map[string]*Bucket
	overflow   Bucket
	nextSweep  time.Time
	// sweepEvery is how long a bucket takes to fill up from empty: the
	// least idle time after which it can be dropped.
	sweepEvery time.Duration
}

func newClients(rps, burst uint32, maxClients int, now time.Time) *clients {
	if maxClients <= 0 {
		maxClients = DefaultMaxClients
	}
	c := &clients{rps: rps, burst: burst, max: maxClients, m: map[string]*Bucket{}, overflow: NewBucket(rps, burst, now)}
	b := max(burst, rps)
	c.sweepEvery = max(time.Second, time.Duration(float64(b)/float64(rps)*float64(time.Second)))
	c.nextSweep = now.Add(c.sweepEvery)
	return c
}

// bucket returns the bucket of id at now.
func (c *clients) bucket(id string, now time.Time) *Bucket {
	if b, ok := c.m[id]; ok {
		return b
	}
	if len(c.m) >= c.max || !now.Before(c.nextSweep) {
		c.sweep(now)
	}
	if len(c.m) >= c.max {
		return &c.overflow
	}
	b := NewBucket(c.rps, c.burst, now)
	c.m[id] = &b
	return &b
}

// sweep drops the buckets that are full again. It runs at most once per
// sweepEvery (and when the map is full), so its cost is amortised over
// the requests that made the buckets.
func (c *clients) sweep(now time.Time) {
	if now.Before(c.nextSweep) {
		return
	}
	for id, b := range c.m {
		if b.Full(now) {
			delete(c.m, id)
		}
	}
	c.nextSweep = now.Add(c.sweepEvery)
}
