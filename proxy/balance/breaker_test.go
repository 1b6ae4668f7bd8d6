package balance

import (
	"slices"
	"sync"
	"testing"
	"time"
)

func newWith(cfg Config, opts ...Option) (*Balancer, *fakeClock) {
	b := New(append([]Option{WithConfig(cfg)}, opts...)...)
	c := &fakeClock{}
	b.now = c.now
	return b, c
}

// pickOnly picks addr by skipping every other endpoint of b.
func pickOnly(t *testing.T, b *Balancer, addr string) *Pick {
	t.Helper()
	skip := map[string]bool{}
	for _, ep := range b.Endpoints() {
		if ep.Addr != addr {
			skip[ep.Addr] = true
		}
	}
	p, err := b.Pick(skip)
	if err != nil || p.Endpoint.Addr != addr {
		t.Fatalf("pick %s: %v %v", addr, p, err)
	}
	return p
}

func ejected(b *Balancer, addr string) bool { return slices.Contains(b.Status().Ejected, addr) }

func TestAccrual(t *testing.T) {
	consecutive3 := Accrual{Consecutive: 3}
	rate := Accrual{Ratio: 0.5, MinRequests: 10, Window: 10 * time.Second}
	for _, tc := range []struct {
		name     string
		accrual  Accrual
		outcomes string // F failure, S success, + two seconds pass
		want     bool
	}{
		{"consecutive", consecutive3, "FFF", true},
		{"consecutive broken by a success", consecutive3, "FFSFF", false},
		{"rate above ratio", rate, "SFSFSFSFFF", true},
		{"rate at ratio is not above", rate, "SFSFSFSFSF", false},
		{"rate below min requests", rate, "FFFFFFFFF", false},
		{"rate: old failures leave the window", rate, "FFFFF+++++++FFFFS", false},
		{"rate within the window", rate, "FFFFF++SFFFF", true},
		{"both: consecutive first", Accrual{Consecutive: 3, Ratio: 0.9, MinRequests: 100, Window: time.Second}, "SFFF", true},
		{"off", Accrual{}, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, c := newWith(Config{Accrual: tc.accrual})
			b.Update(eps("a:1", "b:1", "c:1", "d:1"))
			for _, o := range tc.outcomes {
				if o == '+' {
					c.advance(2 * time.Second)
					continue
				}
				pickOnly(t, b, "a:1").Done(time.Millisecond, o == 'F')
			}
			if got := ejected(b, "a:1"); got != tc.want {
				t.Fatalf("ejected = %v, want %v (status %+v)", got, tc.want, b.Status())
			}
		})
	}
}

func TestEjectedEndpointGetsNoTraffic(t *testing.T) {
	b, c := newWith(Config{Accrual: Accrual{Consecutive: 1}})
	b.Update(eps("a:1", "b:1", "c:1"))
	pickOnly(t, b, "a:1").Done(time.Millisecond, true)
	counts := simulate(b, c, 500, map[string]time.Duration{"a:1": time.Microsecond, "b:1": time.Microsecond, "c:1": time.Microsecond})
	if counts["a:1"] != 0 || b.Status().Ejections != 1 {
		t.Fatalf("ejected endpoint got %d picks within its backoff (%+v)", counts["a:1"], b.Status())
	}
}

func TestProbeBackoffAndRecovery(t *testing.T) {
	b, c := newWith(Config{Accrual: Accrual{Consecutive: 1}})
	b.Update(eps("a:1", "b:1", "c:1"))
	pickOnly(t, b, "a:1").Done(time.Millisecond, true)

	// Ejected for 0.75-1s: no probe before 0.75s, one at 1s.
	c.advance(700 * time.Millisecond)
	if p := pickMust(t, b); p.Endpoint.Addr == "a:1" {
		t.Fatal("probed before the backoff ended")
	}
	c.advance(300 * time.Millisecond)
	probe := pickHeld(t, b)
	if probe.Endpoint.Addr != "a:1" || !probe.probe {
		t.Fatalf("first pick after the backoff = %s, want the probe of a:1", probe.Endpoint.Addr)
	}
	// One probe at a time.
	for range 50 {
		if p := pickMust(t, b); p.Endpoint.Addr == "a:1" {
			t.Fatal("a second request went to an endpoint being probed")
		}
	}
	probe.Done(time.Millisecond, true)
	// Re-ejected for 1.5-2s.
	c.advance(1400 * time.Millisecond)
	if p := pickMust(t, b); p.Endpoint.Addr == "a:1" {
		t.Fatal("re-ejection did not back off longer")
	}
	c.advance(600 * time.Millisecond)
	probe = pickHeld(t, b)
	if probe.Endpoint.Addr != "a:1" {
		t.Fatalf("no probe after the second backoff (got %s)", probe.Endpoint.Addr)
	}
	probe.Done(time.Millisecond, false)
	if st := b.Status(); len(st.Ejected) != 0 || st.Ejections != 2 {
		t.Fatalf("after a successful probe: %+v, want none ejected after 2 ejections", st)
	}
	// Closed again: it gets traffic.
	counts := simulate(b, c, 300, map[string]time.Duration{"a:1": time.Millisecond, "b:1": time.Millisecond, "c:1": time.Millisecond})
	if counts["a:1"] == 0 {
		t.Fatalf("recovered endpoint gets no traffic: %v", counts)
	}
}

// pickHeld picks without calling Done.
func pickHeld(t *testing.T, b *Balancer) *Pick {
	t.Helper()
	p, err := b.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// pickMust picks and calls Done: a success.
func pickMust(t *testing.T, b *Balancer) *Pick {
	t.Helper()
	p, err := b.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Done(time.Millisecond, false)
	return p
}

func TestEjectionFloor(t *testing.T) {
	for n, want := range map[int]int{1: 0, 2: 1, 3: 1, 4: 2, 5: 2, 10: 5} {
		b, _ := newWith(Config{Accrual: Accrual{Consecutive: 1}})
		var list []string
		for i := range n {
			list = append(list, string(rune('a'+i))+":1")
		}
		b.Update(eps(list...))
		for _, a := range list {
			pickOnly(t, b, a).Done(time.Millisecond, true)
		}
		st := b.Status()
		if len(st.Ejected) != want || int(st.FloorHits) != n-want {
			t.Fatalf("%d endpoints all failing: %d ejected, %d refused; want %d ejected", n, len(st.Ejected), st.FloorHits, want)
		}
		// Whatever is ejected, picks still find an endpoint.
		if _, err := b.Pick(nil); err != nil {
			t.Fatalf("%d endpoints: %v", n, err)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	b := New()
	for n := 1; n <= 40; n++ {
		hi := min(time.Second<<min(n-1, 10), maxEjection)
		for range 20 {
			d := time.Duration(b.backoff(n))
			if d > hi || d < hi*3/4 {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", n, d, hi*3/4, hi)
			}
		}
	}
}

func TestRemovedEjectedEndpointFreesTheFloor(t *testing.T) {
	b, _ := newWith(Config{Accrual: Accrual{Consecutive: 1}})
	b.Update(eps("a:1", "b:1", "c:1"))
	pickOnly(t, b, "a:1").Done(time.Millisecond, true)
	b.Update(eps("b:1", "c:1", "d:1"))
	pickOnly(t, b, "b:1").Done(time.Millisecond, true)
	if !ejected(b, "b:1") {
		t.Fatalf("a removed endpoint still counts against the floor: %+v", b.Status())
	}
}

func TestSlowStartFactor(t *testing.T) {
	for _, tc := range []struct {
		ss   SlowStart
		age  time.Duration
		want float64
	}{
		{SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeight: 0.1}, 0, 0.1},
		{SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeight: 0.1}, 15 * time.Second, 0.5},
		{SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeight: 0.1}, 30 * time.Second, 1},
		{SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeight: 0.1}, time.Hour, 1},
		{SlowStart{Window: 40 * time.Second, Aggression: 2, MinWeight: 0.1}, 10 * time.Second, 0.5},
		{SlowStart{Window: 30 * time.Second, Aggression: 1, MinWeight: 0.6}, 15 * time.Second, 0.6},
	} {
		if got := tc.ss.factor(int64(tc.age)); got < tc.want-1e-9 || got > tc.want+1e-9 {
			t.Errorf("%+v at %s: factor %v, want %v", tc.ss, tc.age, got, tc.want)
		}
	}
}

func TestSlowStartRampsOnlyNewEndpoints(t *testing.T) {
	const lat = 20 * time.Millisecond // above DefaultRTT: a new endpoint looks cheapest
	for _, tc := range []struct {
		name     string
		window   time.Duration
		initial  bool // c:1 is in the first set
		min, max int  // c's picks of 3000 in its first 3 s
	}{
		{"new endpoint ramps", 30 * time.Second, false, 1, 300},
		{"first set not ramped", 30 * time.Second, true, 700, 1300},
		{"slow start off", 0, false, 700, 1300},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.SlowStart.Window = tc.window
			b, c := newWith(cfg)
			if tc.initial {
				b.Update(eps("a:1", "b:1", "c:1"))
			} else {
				b.Update(eps("a:1", "b:1"))
			}
			run := func() (n int) {
				for range 3000 {
					p, err := b.Pick(nil)
					if err != nil {
						t.Fatal(err)
					}
					p.Done(lat, false)
					c.advance(time.Millisecond)
					if p.Endpoint.Addr == "c:1" {
						n++
					}
				}
				return n
			}
			run()
			b.Update(eps("a:1", "b:1", "c:1"))
			if got := run(); got < tc.min || got > tc.max {
				t.Fatalf("c:1 got %d of 3000 picks in its first 3s, want %d-%d", got, tc.min, tc.max)
			}
			c.advance(30 * time.Second)
			if got := run(); got < 700 || got > 1300 {
				t.Fatalf("c:1 got %d of 3000 picks after its window", got)
			}
		})
	}
}

// Concurrent picks with one endpoint failing and ejections, probes and
// updates racing: the floor holds and every pick finds an endpoint.
func TestBreakerConcurrent(t *testing.T) {
	b := New(WithConfig(Config{Accrual: Accrual{Consecutive: 2}}))
	b.Update(eps("a:1", "b:1", "c:1", "d:1"))
	done := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				p, err := b.Pick(nil)
				if err != nil {
					t.Error(err)
					return
				}
				p.Done(time.Microsecond, p.Endpoint.Addr != "d:1" && (i+g)%3 == 0)
				if n := len(b.Status().Ejected); n > 2 {
					t.Errorf("%d of 4 endpoints out", n)
					return
				}
			}
		})
	}
	for i := range 200 {
		if i%2 == 0 {
			b.Update(eps("a:1", "b:1", "c:1", "d:1"))
		} else {
			b.Update(eps("a:1", "b:1", "c:1", "d:1", "e:1"))
		}
		time.Sleep(time.Millisecond)
	}
	close(done)
	wg.Wait()
}

// Failures' latency penalty: none while the breaker can eject (a
// fast-failing endpoint keeps its share until ejected), doubled once the
// floor refused to eject it, or with accrual off.
func TestFailurePenalty(t *testing.T) {
	for _, tc := range []struct {
		name    string
		accrual Accrual
		refused bool
		want    time.Duration // estimate after a 1ms failure on a 1ms estimate
	}{
		{"breaker on", Accrual{Consecutive: 7}, false, time.Millisecond},
		{"floor refused", Accrual{Consecutive: 7}, true, 2 * DefaultRTT},
		{"accrual off", Accrual{}, false, 2 * DefaultRTT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := newWith(Config{Accrual: tc.accrual})
			b.Update(eps("a:1", "b:1"))
			p := pickOnly(t, b, "a:1")
			p.st.rttNs = float64(time.Millisecond)
			p.st.refused.Store(tc.refused)
			p.Done(time.Millisecond, true)
			if got := time.Duration(p.st.rttNs); got != tc.want {
				t.Fatalf("estimate %s, want %s", got, tc.want)
			}
		})
	}
}
