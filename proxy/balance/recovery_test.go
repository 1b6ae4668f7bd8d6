package balance

import (
	"container/heap"
	"math"
	"testing"
	"time"
)

// inflight is a request the load simulation has not completed yet.
type inflight struct {
	end int64
	p   *Pick
	lat time.Duration
}

type inflightHeap []inflight

func (h inflightHeap) Len() int           { return len(h) }
func (h inflightHeap) Less(i, j int) bool { return h[i].end < h[j].end }
func (h inflightHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *inflightHeap) Push(x any)        { *h = append(*h, x.(inflight)) }
func (h *inflightHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// load is an open-loop simulation on the fake clock: one request every
// interval from now until now+d, each answered after latency(addr, t)
// (t: time since the simulation's origin), with requests overlapping as
// they would under real concurrency. It returns the picks per address.
type load struct {
	b        *Balancer
	c        *fakeClock
	origin   int64
	interval time.Duration
	latency  func(addr string, t time.Duration) time.Duration
	pending  inflightHeap
}

func (l *load) run(t *testing.T, d time.Duration) map[string]int {
	t.Helper()
	counts := map[string]int{}
	end := l.c.now() + int64(d)
	for l.c.now() < end {
		now := l.c.now()
		for len(l.pending) > 0 && l.pending[0].end <= now {
			r := heap.Pop(&l.pending).(inflight)
			r.p.Done(r.lat, false)
		}
		p, err := l.b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		lat := l.latency(p.Endpoint.Addr, time.Duration(now-l.origin))
		heap.Push(&l.pending, inflight{end: now + int64(lat), p: p, lat: lat})
		counts[p.Endpoint.Addr]++
		l.c.advance(l.interval)
	}
	return counts
}

// watch runs the load for that many seconds; it returns the picks per
// address and after how long a second first gave addr at least
// least picks (-1: never).
func (l *load) watch(t *testing.T, seconds int, addr string, least float64) (map[string]int, time.Duration) {
	t.Helper()
	back := time.Duration(-1)
	total := map[string]int{}
	for s := range seconds {
		n := l.run(t, time.Second)
		for a, k := range n {
			total[a] += k
		}
		if back < 0 && float64(n[addr]) >= least {
			back = time.Duration(s+1) * time.Second
		}
	}
	return total, back
}

// slowThen is the latency of the k8s slow-start suite: 2 ms, but 200 ms for
// "slow:1" until slowFor.
func slowThen(slowFor time.Duration) func(string, time.Duration) time.Duration {
	return func(addr string, at time.Duration) time.Duration {
		if addr == "slow:1" && at < slowFor {
			return 200 * time.Millisecond
		}
		return 2 * time.Millisecond
	}
}

// At 100 req/s, an endpoint 100 times slower than the others for a while
// gets a trickle of requests while slow, and its fair share back within
// seconds once it is fast; one that stays slow keeps a trickle. With slow
// start, the endpoint joins a live set (its window is 30 s, its slow spell
// its first 20 s, as in the k8s suite).
func TestRecoveryAfterSlowSpell(t *testing.T) {
	for _, tc := range []struct {
		name     string
		addrs    []string
		slowFor  time.Duration // the slow spell; 0: slow all along
		joins    bool          // slow:1 joins a set serving for a minute, slow start on
		fairFrom float64       // slow:1's least share of its fair share once recovered
	}{
		{"one of two recovers", []string{"a:1", "slow:1"}, 20 * time.Second, false, 0.7},
		{"one of three recovers", []string{"a:1", "b:1", "slow:1"}, 20 * time.Second, false, 0.7},
		{"joining one of three recovers, slow start on", []string{"a:1", "b:1", "slow:1"}, 20 * time.Second, true, 0.5},
		{"one of two stays slow", []string{"a:1", "slow:1"}, 0, false, 0},
		{"one of three stays slow", []string{"a:1", "b:1", "slow:1"}, 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{}
			if tc.joins {
				cfg.SlowStart = DefaultConfig().SlowStart
			}
			b, c := newWith(cfg)
			l := &load{b: b, c: c, interval: 10 * time.Millisecond}
			l.latency = slowThen(time.Duration(math.MaxInt64))
			if tc.slowFor > 0 {
				l.latency = slowThen(tc.slowFor)
			}
			if tc.joins {
				b.Update(eps(tc.addrs[:len(tc.addrs)-1]...))
				l.run(t, time.Minute)
			}
			b.Update(eps(tc.addrs...))
			l.origin = c.now()
			spell := tc.slowFor
			if spell == 0 {
				spell = 20 * time.Second
			}
			during := l.run(t, spell)
			fair := float64(time.Second/l.interval) / float64(len(tc.addrs))
			total, back := l.watch(t, 25, "slow:1", fair/2)
			t.Logf("while slow (%s): %v; next 25 s: %v (fair %.0f); half its fair share back after %v",
				spell, during, total, 25*fair, map[bool]any{true: back, false: "never"}[back >= 0])
			if n := during["slow:1"]; n == 0 || float64(n) > 0.02*fair*spell.Seconds() {
				t.Fatalf("while slow it got %d requests, want a few (fair %.0f)", n, fair*spell.Seconds())
			}
			if tc.slowFor == 0 {
				if n := total["slow:1"]; n == 0 || float64(n) > 0.02*fair*25 {
					t.Fatalf("staying slow it got %d requests in 25 s, want a few (fair %.0f)", n, 25*fair)
				}
				return
			}
			if back < 0 || back > 10*time.Second {
				t.Fatalf("recovered, it got half its fair share back after %s, want within 10 s", back)
			}
			if got := float64(total["slow:1"]) / (25 * fair); got < tc.fairFrom || got > 1.5 {
				t.Fatalf("recovered, it got %.2f of its fair share over 25 s, want %.1f-1.5", got, tc.fairFrom)
			}
		})
	}
}
