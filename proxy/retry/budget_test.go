package retry

import (
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestBudget(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	sec := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type step struct {
		at       float64 // seconds after t0
		deposits int
		tries    int // Withdraw calls
		want     int // of them allowed
	}
	tests := []struct {
		name  string
		ratio float64
		floor uint32
		steps []step
	}{
		{name: "floor only: 1/s over the 10 s window", ratio: 0.0001, floor: 1, steps: []step{{at: 0, tries: 15, want: 10}}},
		{name: "ratio of requests plus the floor", ratio: 0.2, floor: 1, steps: []step{{at: 0, deposits: 100, tries: 50, want: 30}}},
		{name: "defaults: 20 % plus 10/s", ratio: 0, floor: 0, steps: []step{{at: 0, deposits: 1000, tries: 1000, want: 300}}},
		{name: "spent, then the window slides and old retries expire", ratio: 0.5, floor: 1, steps: []step{
			{at: 0, deposits: 20, tries: 40, want: 20},
			{at: 5, tries: 5, want: 0},
			{at: 10.5, tries: 40, want: 10}, // the first second's requests and retries expired: floor only
		}},
		{name: "deposits later in the window count", ratio: 1, floor: 1, steps: []step{
			{at: 0, tries: 12, want: 10},
			{at: 3, deposits: 5, tries: 10, want: 5},
		}},
		{name: "a long idle gap forgets everything", ratio: 1, floor: 1, steps: []step{
			{at: 0, deposits: 100, tries: 200, want: 110},
			{at: 1000, tries: 20, want: 10},
		}},
		{name: "before the base counts in the first bucket", ratio: 1, floor: 1, steps: []step{{at: -5, deposits: 2, tries: 20, want: 12}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewBudget(t0)
			for i, s := range tt.steps {
				for range s.deposits {
					b.Deposit(sec(s.at))
				}
				got := 0
				for range s.tries {
					if b.Withdraw(sec(s.at), tt.ratio, tt.floor) {
						got++
					}
				}
				if got != s.want {
					t.Fatalf("step %d at %vs: %d retries allowed, want %d", i, s.at, got, s.want)
				}
			}
		})
	}
}

// TestBudgetLoad is the promise: over a window, retries never exceed
// ratio × requests plus the floor, however many callers ask at once
// (beyond an overshoot of at most one per concurrent caller).
func TestBudgetLoad(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := NewBudget(t0)
	const workers, perWorker = 8, 500
	var mu sync.Mutex
	allowed := 0
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := range perWorker {
				now := t0.Add(time.Duration(i%5) * 100 * time.Millisecond) // all within one window
				b.Deposit(now)
				if b.Withdraw(now, 0.2, 1) {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
			_ = w
		}()
	}
	wg.Wait()
	limit := 0.2*workers*perWorker + 10
	if float64(allowed) > limit+workers || float64(allowed) < limit-1 {
		t.Errorf("%d retries allowed for %d requests, want about %.0f", allowed, workers*perWorker, limit)
	}
}

func TestBudgetsBounded(t *testing.T) {
	bs := NewBudgets(3)
	t0 := bs.base
	for i := range 3 {
		if bs.Get("d"+strconv.Itoa(i), t0) == nil {
			t.Fatalf("no budget for d%d", i)
		}
	}
	a := bs.Get("d0", t0)
	if a != bs.Get("d0", t0) {
		t.Fatal("a destination's budget changed")
	}
	if bs.Get("d3", t0.Add(time.Second)) != nil {
		t.Fatal("a fourth destination got a budget while three are in use")
	}
	// d0 is used again after a window; d1 and d2 are not.
	t1 := t0.Add(Window + time.Second)
	a.Deposit(t1)
	if bs.Get("d3", t1) == nil {
		t.Fatal("idle budgets were not swept")
	}
	if n := bs.Len(); n != 2 {
		t.Errorf("%d budgets held after the sweep, want 2 (d0, d3)", n)
	}
	if bs.Get("d0", t1) != a {
		t.Error("the budget in use was swept")
	}
	later := t1.Add(Window)
	for i := range 10 {
		if bs.Get("e"+strconv.Itoa(i), later.Add(time.Duration(i)*Window)) == nil {
			t.Fatalf("e%d: no budget although the others are idle", i)
		}
	}
	if n := bs.Len(); n > 3 {
		t.Errorf("%d budgets held, bound 3", n)
	}
}

func TestBytes(t *testing.T) {
	b := NewBytes(100)
	if !b.Acquire(60) || !b.Acquire(40) {
		t.Fatal("bytes within the bound refused")
	}
	if b.Acquire(1) {
		t.Fatal("a byte over the bound taken")
	}
	b.Release(50)
	if b.Used() != 50 || !b.Acquire(50) || b.Acquire(1) {
		t.Fatalf("after release: used %d", b.Used())
	}
	var none *Bytes
	if !none.Acquire(1<<40) || none.Used() != 0 {
		t.Error("a nil bound refused")
	}
	none.Release(5)
	if NewBytes(0).max != DefaultReplayBytes {
		t.Error("default bound")
	}
}

func BenchmarkBudget(b *testing.B) {
	bs := NewBudgets(0)
	now := time.Now()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bu := bs.Get("books.demo.svc.cluster.local:80", now)
			bu.Deposit(now)
			_ = bu.Withdraw(now, 0.2, 10)
		}
	})
}

// BenchmarkBudgetRequest is what a request with a retry policy pays when
// it needs no retry: the lookup, the clock and the deposit.
func BenchmarkBudgetRequest(b *testing.B) {
	bs := NewBudgets(0)
	b.ReportAllocs()
	for b.Loop() {
		now := time.Now()
		bs.Get("books.demo.svc.cluster.local:80", now).Deposit(now)
	}
}
