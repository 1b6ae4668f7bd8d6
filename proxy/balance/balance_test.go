package balance

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock drives the balancer's notion of time in tests of pure logic.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) now() int64              { return c.ns.Load() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func newWithClock() (*Balancer, *fakeClock) {
	b := New()
	c := &fakeClock{}
	b.now = c.now
	return b, c
}

func eps(addrs ...string) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{Addr: a, Weight: 1}
	}
	return out
}

func TestPickEmpty(t *testing.T) {
	b := New()
	if _, err := b.Pick(nil); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick on empty balancer: err = %v, want ErrNoEndpoints", err)
	}
	b.Update(eps("10.0.0.1:80"))
	b.Update(nil)
	if _, err := b.Pick(nil); !errors.Is(err, ErrNoEndpoints) {
		t.Fatalf("Pick after emptying: err = %v, want ErrNoEndpoints", err)
	}
}

func TestPickSkip(t *testing.T) {
	b := New()
	b.Update(eps("a:1", "b:1", "c:1", "d:1"))
	tests := []struct {
		name    string
		skip    map[string]bool
		allowed map[string]bool // nil: expect ErrNoEndpoints
	}{
		{"none skipped", nil, map[string]bool{"a:1": true, "b:1": true, "c:1": true, "d:1": true}},
		{"one skipped", map[string]bool{"a:1": true}, map[string]bool{"b:1": true, "c:1": true, "d:1": true}},
		{"two skipped", map[string]bool{"a:1": true, "c:1": true}, map[string]bool{"b:1": true, "d:1": true}},
		{"one left", map[string]bool{"a:1": true, "b:1": true, "c:1": true}, map[string]bool{"d:1": true}},
		{"all skipped", map[string]bool{"a:1": true, "b:1": true, "c:1": true, "d:1": true}, nil},
		{"unknown skipped", map[string]bool{"z:1": true}, map[string]bool{"a:1": true, "b:1": true, "c:1": true, "d:1": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]int{}
			for range 400 {
				p, err := b.Pick(tt.skip)
				if tt.allowed == nil {
					if !errors.Is(err, ErrNoEndpoints) {
						t.Fatalf("err = %v, want ErrNoEndpoints", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				seen[p.Endpoint.Addr]++
				p.Done(time.Millisecond, false)
			}
			for a := range seen {
				if !tt.allowed[a] {
					t.Errorf("picked %s, which is skipped", a)
				}
			}
			for a := range tt.allowed {
				if seen[a] == 0 {
					t.Errorf("never picked %s (picks: %v)", a, seen)
				}
			}
		})
	}
}

// simulate runs n sequential requests against endpoints whose latency is
// given, with the fake clock advancing by the latency of each request.
func simulate(b *Balancer, c *fakeClock, n int, latency map[string]time.Duration) map[string]int {
	counts := map[string]int{}
	for range n {
		p, err := b.Pick(nil)
		if err != nil {
			panic(err)
		}
		l := latency[p.Endpoint.Addr]
		c.advance(l)
		p.Done(l, false)
		counts[p.Endpoint.Addr]++
	}
	return counts
}

func TestSlowEndpointGetsLessTraffic(t *testing.T) {
	b, c := newWithClock()
	b.Update(eps("fast1:80", "fast2:80", "slow:80"))
	counts := simulate(b, c, 3000, map[string]time.Duration{
		"fast1:80": time.Millisecond, "fast2:80": time.Millisecond, "slow:80": 50 * time.Millisecond,
	})
	// Uniform would give the slow endpoint a third.
	if counts["slow:80"]*10 > 3000 {
		t.Fatalf("slow endpoint got %d of 3000 requests, want < 10%% (%v)", counts["slow:80"], counts)
	}
	if counts["slow:80"] == 0 {
		t.Fatalf("slow endpoint never probed: %v", counts)
	}
}

func TestPendingSpreadsLoad(t *testing.T) {
	// Requests that never complete: with equal latency, pending counts
	// must spread them instead of piling onto one endpoint.
	b := New()
	b.Update(eps("a:1", "b:1"))
	counts := map[string]int{}
	for range 100 {
		p, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Endpoint.Addr]++
	}
	if d := counts["a:1"] - counts["b:1"]; d > 2 || d < -2 {
		t.Fatalf("outstanding requests not spread: %v", counts)
	}
}

func TestWeightsRespected(t *testing.T) {
	b := New()
	b.Update([]Endpoint{{Addr: "heavy:1", Weight: 3}, {Addr: "light:1", Weight: 1}})
	// Keep requests outstanding so the cost is pending/weight: the balance
	// point is 3:1.
	var picks []*Pick
	counts := map[string]int{}
	for range 400 {
		p, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		counts[p.Endpoint.Addr]++
		picks = append(picks, p)
	}
	for _, p := range picks {
		p.Done(time.Millisecond, false)
	}
	ratio := float64(counts["heavy:1"]) / float64(counts["light:1"])
	if ratio < 2.5 || ratio > 3.5 {
		t.Fatalf("heavy:light = %.2f (%v), want about 3", ratio, counts)
	}
}

func TestZeroWeightIsOne(t *testing.T) {
	b := New()
	b.Update([]Endpoint{{Addr: "a:1"}})
	if got := b.Endpoints()[0].Weight; got != 1 {
		t.Fatalf("weight = %d, want 1", got)
	}
}

func TestFailuresRepel(t *testing.T) {
	b, c := newWithClock()
	b.Update(eps("ok:1", "broken:1", "ok2:1"))
	counts := map[string]int{}
	for range 1000 {
		p, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		c.advance(time.Millisecond)
		// The broken endpoint fails fast: without the failure penalty its
		// tiny RTT would attract traffic.
		if p.Endpoint.Addr == "broken:1" {
			p.Done(10*time.Microsecond, true)
		} else {
			p.Done(time.Millisecond, false)
		}
		counts[p.Endpoint.Addr]++
	}
	if counts["broken:1"] > 100 {
		t.Fatalf("fast-failing endpoint got %d of 1000 requests: %v", counts["broken:1"], counts)
	}
}

func TestUpdateKeepsState(t *testing.T) {
	b, c := newWithClock()
	b.Update(eps("a:1", "b:1"))
	simulate(b, c, 500, map[string]time.Duration{"a:1": time.Millisecond, "b:1": 100 * time.Millisecond})
	b.Update([]Endpoint{{Addr: "a:1", Weight: 1, Zone: "z1"}, {Addr: "b:1", Weight: 1}, {Addr: "new:1", Weight: 1}})
	got := map[string]Endpoint{}
	for _, e := range b.Endpoints() {
		got[e.Addr] = e
	}
	if len(got) != 3 || got["a:1"].Zone != "z1" {
		t.Fatalf("endpoints after update = %v", got)
	}
	// b:1 kept its slow estimate: between a:1 and b:1, a:1 wins.
	nodes := b.nodes.Load().all
	var a, slow *node
	for _, n := range nodes {
		switch n.ep.Addr {
		case "a:1":
			a = n
		case "b:1":
			slow = n
		}
	}
	if b.cheaper(a, slow, &SlowStart{}, c.now()) != a || b.cheaper(slow, a, &SlowStart{}, c.now()) != a {
		t.Fatal("the slow endpoint lost its latency estimate across Update")
	}
}

func TestInFlightPickSurvivesRemoval(t *testing.T) {
	b := New()
	b.Update(eps("a:1"))
	p, err := b.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Update(eps("b:1"))
	p.Done(time.Millisecond, false) // must not panic or touch b:1
	p.Done(time.Millisecond, false) // second Done ignored
	if got := b.Endpoints(); len(got) != 1 || got[0].Addr != "b:1" {
		t.Fatalf("endpoints = %v", got)
	}
	if n := (b.nodes.Load().all)[0]; n.st.pending.Load() != 0 {
		t.Fatalf("pending of b:1 = %d, want 0", n.st.pending.Load())
	}
	if p.st.pending.Load() != 0 {
		t.Fatalf("pending of removed a:1 = %d, want 0", p.st.pending.Load())
	}
}

func TestDuplicateAddrs(t *testing.T) {
	b := New()
	b.Update([]Endpoint{{Addr: "a:1", Zone: "old"}, {Addr: "b:1"}, {Addr: "a:1", Zone: "new"}})
	got := b.Endpoints()
	if len(got) != 2 || got[0].Addr != "a:1" || got[0].Zone != "new" {
		t.Fatalf("endpoints = %v", got)
	}
}

func TestPeakEWMA(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration // one per second of fake time
		check   func(rtt float64) bool
		want    string
	}{
		{"peak replaces at once", []time.Duration{time.Millisecond, 500 * time.Millisecond}, func(r float64) bool { return r == float64(500*time.Millisecond) }, "== 500ms"},
		{"lower decays slowly", []time.Duration{500 * time.Millisecond, time.Millisecond}, func(r float64) bool { return r > float64(400*time.Millisecond) && r < float64(500*time.Millisecond) }, "in (400ms, 500ms)"},
		{"converges down", append([]time.Duration{500 * time.Millisecond}, repeat(time.Millisecond, 90)...), func(r float64) bool { return r < float64(2*time.Millisecond) }, "< 2ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &stats{rttNs: float64(DefaultRTT)}
			var now int64
			for _, s := range tt.samples {
				now += int64(time.Second)
				st.observe(float64(s), noPenalty, now, stalePick{})
			}
			if !tt.check(st.rttNs) {
				t.Fatalf("estimate = %v, want %s", time.Duration(st.rttNs), tt.want)
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestTwoDistinct(t *testing.T) {
	b := New()
	for n := 2; n < 6; n++ {
		for range 1000 {
			i, j := b.two(n)
			if i == j || i < 0 || j < 0 || i >= n || j >= n {
				t.Fatalf("two(%d) = %d, %d", n, i, j)
			}
		}
	}
}

func TestConcurrent(t *testing.T) {
	b := New()
	b.Update(eps("a:1", "b:1", "c:1"))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			b.Update(eps("a:1", fmt.Sprintf("x%d:1", i%5), "c:1"))
			_ = b.Endpoints()
		}
	}()
	var picked atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			skip := map[string]bool{"a:1": true}
			for i := range 2000 {
				s := skip
				if i%2 == 0 {
					s = nil
				}
				p, err := b.Pick(s)
				if err != nil {
					t.Error(err)
					return
				}
				p.Done(time.Duration(i%7)*time.Microsecond, i%13 == 0)
				picked.Add(1)
			}
		}()
	}
	for picked.Load() < 16000 && !t.Failed() {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	wg.Wait()
	for _, n := range b.nodes.Load().all {
		if p := n.st.pending.Load(); p != 0 {
			t.Errorf("%s: pending = %d after all Done", n.ep.Addr, p)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			list := make([]Endpoint, n)
			for i := range list {
				list[i] = Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i), Weight: 1}
			}
			benchPick(b, New(), list)
		})
	}
	// Zone preference on: half the endpoints in the client's zone.
	b.Run("endpoints=6/zoned", func(b *testing.B) {
		list := make([]Endpoint, 6)
		for i := range list {
			list[i] = Endpoint{Addr: fmt.Sprintf("10.0.0.%d:80", i), Weight: 1, Zone: []string{"z1", "z2"}[i%2]}
		}
		benchPick(b, New(WithZone("z1")), list)
	})
}

func benchPick(b *testing.B, bal *Balancer, list []Endpoint) {
	bal.Update(list)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p, err := bal.Pick(nil)
			if err != nil {
				b.Error(err)
				return
			}
			p.Done(time.Millisecond, false)
		}
	})
}
