package balance

import (
	"math"
	"testing"
	"time"
)

func TestDecayed(t *testing.T) {
	e := math.Exp(-1)
	held := math.Exp(-float64(StaleAfter) / float64(DecayTime)) // decayed by the time it is stale
	for _, tc := range []struct {
		name    string
		elapsed time.Duration
		want    float64 // times the estimate
	}{
		{"fresh", 0, 1},
		{"negative elapsed", -time.Second, 1},
		{"within StaleAfter: DecayTime", StaleAfter / 2, math.Exp(-float64(StaleAfter/2) / float64(DecayTime))},
		{"stale", StaleAfter, held},
		{"one StaleDecay past StaleAfter", StaleAfter + StaleDecay, held * e},
		{"three StaleDecays past", StaleAfter + 3*StaleDecay, held * e * e * e},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := decayed(100, int64(tc.elapsed)) / 100
			if math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("decayed after %s = %v of the estimate, want %v", tc.elapsed, got, tc.want)
			}
		})
	}
}

// The estimate a pick compares, on the fake clock: held while samples
// come, decayed once stale and idle, held again while a request is in
// flight, and set by the next answer from what the pick saw.
func TestStaleEstimate(t *testing.T) {
	const slow, fast = 200 * time.Millisecond, 2 * time.Millisecond
	for _, tc := range []struct {
		name     string
		idle     time.Duration // after a slow sample
		inFlight bool          // a request picked at the end of idle is still out
		answer   time.Duration // its answer (0: none yet)
		min, max time.Duration // the estimate a pick then compares
	}{
		{"slow decay within StaleAfter", StaleAfter / 2, false, 0, 190 * time.Millisecond, 191 * time.Millisecond},
		{"fast decay once stale", StaleAfter + 2*StaleDecay, false, 0, 24 * time.Millisecond, 25 * time.Millisecond},
		{"level with 2ms after StaleAfter + (ln(100) - 0.1) StaleDecays", StaleAfter + 4505*StaleDecay/1000, false, 0, 1990 * time.Microsecond, 2010 * time.Microsecond},
		{"held while a request is in flight", 10 * time.Second, true, 0, slow, slow},
		{"a fast answer after the idle spell sets it", 10 * time.Second, true, fast, fast, fast},
		{"a fast answer within StaleAfter is averaged in", StaleAfter / 2, true, fast, 150 * time.Millisecond, 200 * time.Millisecond},
		{"a slow answer after the idle spell: back at the peak", 10 * time.Second, true, slow, slow, slow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, c := newWith(Config{})
			b.Update(eps("a:1", "b:1"))
			pickOnly(t, b, "a:1").Done(slow, false)
			c.advance(tc.idle)
			if tc.inFlight {
				p := pickOnly(t, b, "a:1")
				c.advance(tc.answer)
				if tc.answer > 0 {
					p.Done(tc.answer, false)
				}
			}
			n := b.nodes.Load().all[0]
			got := time.Duration(n.cost(c.now()) / float64(n.st.pending.Load()+1))
			if got < tc.min || got > tc.max {
				t.Fatalf("estimate %s, want %s-%s", got, tc.min, tc.max)
			}
		})
	}
}

// An endpoint whose requests hang (no answer, no sample) does not look ever
// cheaper: while they are in flight its estimate holds, so the requests
// piling up on it keep it out.
func TestHungEndpointDoesNotAttract(t *testing.T) {
	b, c := newWith(Config{})
	b.Update(eps("a:1", "hung:1"))
	pickOnly(t, b, "hung:1") // never answers
	got := 0
	for range 6000 {
		p, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		c.advance(10 * time.Millisecond)
		if p.Endpoint.Addr == "hung:1" {
			got++ // left hanging too
			continue
		}
		p.Done(2*time.Millisecond, false)
	}
	if got > 5 {
		t.Fatalf("an endpoint with requests hanging for a minute got %d more of 6000", got)
	}
}

// An endpoint never measured is picked at once, one request at a time, and
// its first answer replaces the DefaultRTT guess.
func TestNewEndpointMeasuredAtOnce(t *testing.T) {
	b, c := newWith(Config{})
	b.Update(eps("a:1"))
	pickOnly(t, b, "a:1").Done(time.Millisecond, false)
	b.Update(eps("a:1", "new:1"))
	first := pickHeld(t, b)
	if first.Endpoint.Addr != "new:1" {
		t.Fatalf("first pick after it joined: %s, want new:1", first.Endpoint.Addr)
	}
	for range 20 {
		if p := pickMust(t, b); p.Endpoint.Addr != "a:1" {
			t.Fatalf("a second request to new:1 while its first is in flight")
		}
	}
	c.advance(3 * time.Millisecond)
	first.Done(3*time.Millisecond, false)
	if got := time.Duration(first.st.rttNs); got != 3*time.Millisecond {
		t.Fatalf("estimate after the first answer %s, want 3ms", got)
	}
}
