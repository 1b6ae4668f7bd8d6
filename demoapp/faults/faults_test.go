package faults

import (
	"context"
	"math"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		rate    float64
		wantErr bool
	}{
		{0, false}, {0.5, false}, {1, false},
		{-0.1, true}, {1.01, true}, {math.NaN(), true}, {math.Inf(1), true},
	}
	for _, tt := range tests {
		_, err := New(tt.rate)
		if (err != nil) != tt.wantErr {
			t.Errorf("New(%v) error = %v, want error %v", tt.rate, err, tt.wantErr)
		}
	}
}

func TestFail(t *testing.T) {
	tests := []struct {
		name string
		rate float64
		roll float64
		want bool
	}{
		{"zero never fails", 0, 0, false},
		{"one always fails", 1, 0.999, true},
		{"below rate fails", 0.3, 0.29, true},
		{"at rate passes", 0.3, 0.3, false},
		{"above rate passes", 0.3, 0.9, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, err := New(tt.rate)
			if err != nil {
				t.Fatal(err)
			}
			inj.roll = func() float64 { return tt.roll }
			if got := inj.Fail(); got != tt.want {
				t.Errorf("Fail() = %v, want %v", got, tt.want)
			}
		})
	}
	var nilInj *Injector
	if nilInj.Fail() || nilInj.Rate() != 0 {
		t.Error("nil Injector must never fail")
	}
}

// fakeNow is a settable clock for the window tests.
type fakeNow struct{ t time.Time }

func (f *fakeNow) now() time.Time { return f.t }

func TestLimitEndsFailures(t *testing.T) {
	tests := []struct {
		name    string
		failFor time.Duration
		after   time.Duration // since the first request
		want    bool
	}{
		{"no limit fails for ever", 0, time.Hour, true},
		{"within the window", 40 * time.Second, 39 * time.Second, true},
		{"at its end", 40 * time.Second, 40 * time.Second, false},
		{"after it", 40 * time.Second, time.Minute, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeNow{t: time.Unix(1000, 0)}
			inj, err := New(1)
			if err != nil {
				t.Fatal(err)
			}
			if err := inj.Limit(tt.failFor, NewClock(clk.now)); err != nil {
				t.Fatal(err)
			}
			if !inj.Fail() {
				t.Fatal("the first request must fail")
			}
			clk.t = clk.t.Add(tt.after)
			if got := inj.Fail(); got != tt.want {
				t.Errorf("Fail() %v after the first request = %v, want %v", tt.after, got, tt.want)
			}
		})
	}
	inj, _ := New(1)
	if inj.Limit(-time.Second, NewClock(nil)) == nil || inj.Limit(time.Second, nil) == nil {
		t.Error("Limit must refuse a negative window and a window without a clock")
	}
}

func TestClockStartsAtFirstMark(t *testing.T) {
	clk := &fakeNow{t: time.Unix(1000, 0)}
	c := NewClock(clk.now)
	clk.t = clk.t.Add(time.Minute) // time before the first request does not count
	if c.Since() != 0 {
		t.Errorf("Since before the first request = %v, want 0", c.Since())
	}
	c.Mark()
	clk.t = clk.t.Add(5 * time.Second)
	c.Mark() // a later request does not restart it
	if got := c.Since(); got != 5*time.Second {
		t.Errorf("Since = %v, want 5s", got)
	}
	var nilClock *Clock
	nilClock.Mark()
	if nilClock.Since() != 0 {
		t.Error("a nil Clock must read 0")
	}
}

func TestSlowStartWait(t *testing.T) {
	tests := []struct {
		name       string
		window     time.Duration
		delay      time.Duration
		after      time.Duration
		want       time.Duration
		wantBadCfg bool
	}{
		{"off", 0, 200 * time.Millisecond, 0, 0, false},
		{"no delay", 20 * time.Second, 0, 0, 0, false},
		{"within the window", 20 * time.Second, 200 * time.Millisecond, 19 * time.Second, 200 * time.Millisecond, false},
		{"at its end", 20 * time.Second, 200 * time.Millisecond, 20 * time.Second, 0, false},
		{"negative window", -time.Second, time.Millisecond, 0, 0, true},
		{"negative delay", time.Second, -time.Millisecond, 0, 0, true},
		{"delay too long", time.Second, 2 * MaxSlowDelay, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &fakeNow{t: time.Unix(1000, 0)}
			s := &SlowStart{For: tt.window, Delay: tt.delay, Clock: NewClock(clk.now)}
			if err := s.Validate(); (err != nil) != tt.wantBadCfg {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantBadCfg)
			}
			if tt.wantBadCfg {
				return
			}
			s.Clock.Mark()
			clk.t = clk.t.Add(tt.after)
			if got := s.Wait(); got != tt.want {
				t.Errorf("Wait() %v after the first request = %v, want %v", tt.after, got, tt.want)
			}
		})
	}
	var off *SlowStart
	if off.Wait() != 0 {
		t.Error("a nil SlowStart must not delay")
	}
}

// While slow, at most Capacity requests are served at once: the next one
// waits for a slot (and gives up when its client does); a request that
// ends frees its slot. Outside the window nothing waits.
func TestSlowStartCapacity(t *testing.T) {
	for _, tc := range []struct {
		capacity int
		bad      bool
	}{{-1, true}, {MaxSlowCapacity + 1, true}, {0, false}, {1, false}} {
		s := &SlowStart{For: time.Minute, Delay: time.Minute, Capacity: tc.capacity}
		if err := s.Validate(); (err != nil) != tc.bad {
			t.Errorf("capacity %d: Validate() = %v, want error %v", tc.capacity, err, tc.bad)
		}
	}
	s := &SlowStart{For: time.Hour, Delay: MaxSlowDelay, Capacity: 1, Clock: NewClock(nil)}
	s.Clock.Mark()
	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := make(chan bool)
	go func() { doneA <- s.Serve(ctxA) }()
	slots := s.pool()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if len(slots) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first request never took the slot")
		}
	}
	// The second waits for the slot, and returns when its client goes.
	ctxB, cancelB := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelB()
	if s.Serve(ctxB) {
		t.Fatal("a second request was served while the only slot was taken")
	}
	if len(slots) != 1 {
		t.Fatal("the waiting request took a slot")
	}
	cancelA()
	if <-doneA {
		t.Fatal("a cancelled request reported served")
	}
	if len(slots) != 0 {
		t.Fatal("the slot was not freed")
	}
	// Past the window: served at once, whatever the capacity.
	fast := &SlowStart{For: time.Nanosecond, Delay: MaxSlowDelay, Capacity: 1, Clock: NewClock(nil)}
	fast.Clock.Mark()
	time.Sleep(time.Millisecond)
	if !fast.Serve(context.Background()) {
		t.Fatal("a request after the window was not served")
	}
}
