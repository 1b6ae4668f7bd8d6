package ratelimit

import (
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// TestBucket: a full bucket lets burst through at once, then one token
// per 1/rate; Wait says exactly when the next one is due; a bucket that
// sat idle fills up to burst, no more.
func TestBucket(t *testing.T) {
	type step struct {
		ms       int
		wantWait time.Duration // 0: admitted (and a token taken)
	}
	for _, tt := range []struct {
		name       string
		rps, burst uint32
		steps      []step
	}{
		{"no limit", 0, 0, []step{{0, 0}, {0, 0}, {0, 0}}},
		{"burst defaults to rate", 2, 0, []step{{0, 0}, {0, 0}, {0, 500 * time.Millisecond}, {499, time.Millisecond}, {500, 0}, {500, 500 * time.Millisecond}}},
		{"burst above rate", 1, 3, []step{{0, 0}, {0, 0}, {0, 0}, {0, time.Second}, {250, 750 * time.Millisecond}, {1000, 0}}},
		{"idle fills to burst only", 10, 2, []step{{0, 0}, {0, 0}, {0, 100 * time.Millisecond}, {60_000, 0}, {60_000, 0}, {60_000, 100 * time.Millisecond}}},
		{"clock going back changes nothing", 1, 1, []step{{1000, 0}, {0, time.Second}, {2000, 0}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBucket(tt.rps, tt.burst, t0)
			for i, s := range tt.steps {
				w := b.Wait(at(s.ms))
				if w != s.wantWait {
					t.Fatalf("step %d at %dms: wait %v, want %v", i, s.ms, w, s.wantWait)
				}
				if w == 0 {
					b.Take()
				}
			}
		})
	}
}

// TestClientsBounded: each identity has its own bucket; past the bound new
// identities share the overflow bucket, so spraying identities cannot
// grow memory or multiply the budget; buckets full again are swept.
func TestClientsBounded(t *testing.T) {
	c := newClients(1, 1, 3, t0)
	for _, id := range []string{"a", "b", "c"} {
		if b := c.bucket(id, t0); b.Wait(t0) != 0 {
			t.Fatalf("%s: a new client's bucket is not full", id)
		} else {
			b.Take()
		}
	}
	for i := range 100 {
		b := c.bucket(string(rune('A'+i)), t0)
		if w := b.Wait(t0); (i == 0) != (w == 0) {
			t.Fatalf("overflow client %d: wait %v: past the bound the spray must share one bucket", i, w)
		}
		if i == 0 {
			b.Take()
		}
	}
	if len(c.m) != 3 {
		t.Fatalf("%d buckets, bound 3", len(c.m))
	}
	// A second later every bucket is full again: a new identity sweeps
	// them and gets its own.
	later := t0.Add(time.Second)
	if b := c.bucket("d", later); b == &c.overflow || len(c.m) != 1 {
		t.Fatalf("after the buckets filled up: overflow %v, %d buckets, want the swept map with d alone", b == &c.overflow, len(c.m))
	}
}

// FuzzBucket: whatever the rate, burst and the times requests come at,
// a bucket never admits more than burst + rate x elapsed, and a request
// refused is told to wait no longer than one token's time.
func FuzzBucket(f *testing.F) {
	f.Add(uint32(100), uint32(10), []byte{0, 0, 0, 5, 200, 1, 1, 1})
	f.Add(uint32(1), uint32(0), []byte{255, 0, 7})
	f.Fuzz(func(t *testing.T, rps, burst uint32, gaps []byte) {
		rps, burst = rps%100000+1, burst%100000
		b := NewBucket(rps, burst, t0)
		now, admitted := t0, 0
		for _, g := range gaps {
			now = now.Add(time.Duration(g) * time.Millisecond)
			w := b.Wait(now)
			if w == 0 {
				b.Take()
				admitted++
				continue
			}
			if w > time.Second/time.Duration(rps)+time.Microsecond {
				t.Fatalf("wait %v at %d rps: longer than one token", w, rps)
			}
		}
		size := burst
		if size == 0 {
			size = rps
		}
		limit := float64(size) + float64(rps)*now.Sub(t0).Seconds()
		if float64(admitted) > limit+1e-6 {
			t.Fatalf("admitted %d, at most %.3f (rps %d burst %d over %v)", admitted, limit, rps, burst, now.Sub(t0))
		}
	})
}
