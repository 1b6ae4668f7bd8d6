package balance

import (
	"math"
	"testing"
	"time"
)

func TestDecayed(t *testing.T) {
	e := math.Exp(-1)
	for _, tc := range []struct {
		name    string
		elapsed time.Duration
		want    float64 // times the estimate
	}{
		{"fresh", 0, 1},
		{"negative elapsed", -time.Second, 1},
		{"within StaleAfter: held", StaleAfter, 1},
		{"one StaleDecay past StaleAfter", StaleAfter + StaleDecay, e},
		{"three StaleDecays past", StaleAfter + 3*StaleDecay, e * e * e},
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
		{"held within StaleAfter", StaleAfter / 2, false, 0, slow, slow},
		{"decays once stale", StaleAfter + 2*StaleDecay, false, 0, 27 * time.Millisecond, 28 * time.Millisecond},
		{"level with 2ms after StaleAfter + ln(100) StaleDecays", StaleAfter + 4605*StaleDecay/1000, false, 0, 1990 * time.Microsecond, 2010 * time.Microsecond},
		{"held while a request is in flight", 10 * time.Second, true, 0, slow, slow},
		{"a fast answer after the idle spell sets it near the answer", 10 * time.Second, true, fast, fast, 3 * fast / 2},
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
