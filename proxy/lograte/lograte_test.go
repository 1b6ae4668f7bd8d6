package lograte

import (
	"strconv"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Limiter{Now: func() time.Time { return now }}
	steps := []struct {
		advance    time.Duration
		key        string
		ok         bool
		suppressed int
	}{
		{0, "a", true, 0},
		{0, "a", false, 0},
		{30 * time.Second, "a", false, 0},
		{0, "b", true, 0}, // keys are independent
		{30 * time.Second, "a", true, 2},
		{0, "a", false, 0},
		{time.Minute, "a", true, 1},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, sup := l.Allow(s.key)
		if ok != s.ok || sup != s.suppressed {
			t.Fatalf("step %d (%s): got %v,%d want %v,%d", i, s.key, ok, sup, s.ok, s.suppressed)
		}
	}
}

// A peer varying its key cannot grow the limiter past MaxKeys.
func TestMaxKeys(t *testing.T) {
	now := time.Unix(1000, 0)
	l := &Limiter{Now: func() time.Time { return now }}
	for i := range MaxKeys {
		if ok, _ := l.Allow(strconv.Itoa(i)); !ok {
			t.Fatalf("key %d refused below the cap", i)
		}
	}
	if ok, _ := l.Allow("one-more"); ok {
		t.Fatal("a key past MaxKeys was allowed while all others are fresh")
	}
	if len(l.last) > MaxKeys {
		t.Fatalf("%d keys held", len(l.last))
	}
	now = now.Add(time.Minute)
	if ok, _ := l.Allow("one-more"); !ok {
		t.Fatal("a new key was refused after the old ones expired")
	}
}
