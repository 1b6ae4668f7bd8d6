package balance

import (
	"testing"
	"time"
)

func zoned(spec map[string]string) []Endpoint {
	var out []Endpoint
	for addr, zone := range spec {
		out = append(out, Endpoint{Addr: addr, Weight: 1, Zone: zone})
	}
	return out
}

// runZoned sends n requests of the given latencies, 1 ms apart, returning
// how many left the zone.
func runZoned(t *testing.T, b *Balancer, c *fakeClock, n int, lat map[string]time.Duration) (cross int) {
	t.Helper()
	for range n {
		p, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.Endpoint.Zone != b.zone {
			cross++
		}
		p.Done(lat[p.Endpoint.Zone], false)
		c.advance(time.Millisecond)
	}
	return cross
}

// settle runs 3 rounds of 200 picks, exploreEvery apart: the estimates
// settle and each round explores another zone.
func settle(t *testing.T, b *Balancer, c *fakeClock, lat map[string]time.Duration) {
	t.Helper()
	for range 3 {
		runZoned(t, b, c, 200, lat)
		c.advance(exploreEvery)
	}
}

func TestZonePreference(t *testing.T) {
	two := map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z1", "d:1": "z2", "e:1": "z2", "f:1": "z2"}
	fast := time.Millisecond
	for _, tc := range []struct {
		name     string
		zone     string
		eps      map[string]string
		lat      map[string]time.Duration // by zone
		min, max int                      // cross-zone picks of 2000
	}{
		// At most one pick explores another zone in 2 s.
		{"healthy zone keeps traffic", "z1", two, map[string]time.Duration{"z1": fast, "z2": fast}, 0, 1},
		{"slightly slower zone keeps traffic", "z1", two, map[string]time.Duration{"z1": 3 * fast / 2, "z2": fast}, 0, 1},
		{"as slow as the others keeps traffic", "z1", two, map[string]time.Duration{"z1": 50 * fast, "z2": 50 * fast}, 0, 1},
		{"degraded zone spills", "z1", two, map[string]time.Duration{"z1": 30 * fast, "z2": fast}, 1000, 2000},
		{"no local endpoint", "z3", two, map[string]time.Duration{"z1": fast, "z2": fast}, 2000, 2000},
		{"only local endpoints", "z1", map[string]string{"a:1": "z1", "b:1": "z1"}, map[string]time.Duration{"z1": 20 * fast}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, c := newWith(DefaultConfig(), WithZone(tc.zone))
			b.Update(zoned(tc.eps))
			settle(t, b, c, tc.lat)
			if got := runZoned(t, b, c, 2000, tc.lat); got < tc.min || got > tc.max {
				t.Fatalf("%d of 2000 picks left the zone, want %d-%d", got, tc.min, tc.max)
			}
			if st := b.Status(); st.Picks != 2600 {
				t.Fatalf("picks counted: %d", st.Picks)
			}
		})
	}
}

func TestZoneSpillsAndComesBack(t *testing.T) {
	b, c := newWith(DefaultConfig(), WithZone("z1"))
	b.Update(zoned(map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z1", "d:1": "z2", "e:1": "z2", "f:1": "z2"}))
	healthy := map[string]time.Duration{"z1": time.Millisecond, "z2": time.Millisecond}
	settle(t, b, c, healthy)
	if got := runZoned(t, b, c, 1000, map[string]time.Duration{"z1": 30 * time.Millisecond, "z2": time.Millisecond}); got == 0 {
		t.Fatal("no spill within a second of degradation")
	}
	if !b.Status().Spilling {
		t.Fatal("not spilling while the zone is degraded")
	}
	// Healthy again: within a minute the zone has its traffic back.
	for range 60 {
		runZoned(t, b, c, 1000, healthy)
	}
	if got := runZoned(t, b, c, 1000, healthy); got > 1 {
		t.Fatalf("%d of 1000 picks still leave the recovered zone", got)
	}
}

func TestZoneSpillsWhenMostlyEjected(t *testing.T) {
	b, c := newWith(Config{Accrual: Accrual{Consecutive: 1}}, WithZone("z1"))
	b.Update(zoned(map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z2", "d:1": "z2", "e:1": "z2", "f:1": "z2"}))
	pickOnly(t, b, "a:1").Done(time.Millisecond, true)
	c.advance(zoneEvalEvery)
	lat := map[string]time.Duration{"z1": time.Millisecond, "z2": time.Millisecond}
	if got := runZoned(t, b, c, 300, lat); got < 100 {
		t.Fatalf("half the zone ejected: only %d of 300 picks left it", got)
	}
}

func TestSetZoneLater(t *testing.T) {
	b, c := newWith(DefaultConfig())
	b.Update(zoned(map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z2", "d:1": "z2"}))
	lat := map[string]time.Duration{"z1": time.Millisecond, "z2": time.Millisecond}
	runZoned(t, b, c, 500, lat)
	if st := b.Status(); st.CrossZone != 0 {
		t.Fatalf("cross-zone picks counted without a zone: %+v", st)
	}
	b.SetZone("z2")
	if got := runZoned(t, b, c, 500, lat); got > 1 {
		t.Fatalf("%d of 500 picks left the zone learnt late", got)
	}
}

func TestZoneSpillsWhenOverloaded(t *testing.T) {
	b, c := newWith(DefaultConfig(), WithZone("z1"))
	b.Update(zoned(map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z1", "d:1": "z2", "e:1": "z2", "f:1": "z2"}))
	settle(t, b, c, map[string]time.Duration{"z1": time.Millisecond, "z2": time.Millisecond})
	var held []*Pick
	for range 3 * (maxLocalPending + 2) {
		held = append(held, pickHeld(t, b))
	}
	c.advance(zoneEvalEvery)
	if p := pickHeld(t, b); !b.Status().Spilling {
		t.Fatalf("%d requests in flight on 3 endpoints: not spilling (picked %s)", len(held)+1, p.Endpoint.Addr)
	}
	for _, p := range held {
		p.Done(time.Millisecond, false)
	}
	c.advance(zoneEvalEvery)
	pickMust(t, b)
	if b.Status().Spilling {
		t.Fatal("still spilling once the load is gone")
	}
}

// A node that slows down slows every zone's answers alike: the zone
// compares its latency with the other zones' of the same moment, not with
// an exploration sample from when the node was quiet.
func TestZoneComparesFreshLatency(t *testing.T) {
	for _, tc := range []struct {
		name     string
		later    map[string]time.Duration // by zone, after settling fast
		min, max int                      // cross-zone picks of 2000
	}{
		// Exploration at most every remoteFresh: a handful.
		{"every zone slower: traffic stays", map[string]time.Duration{"z1": 20 * time.Millisecond, "z2": 20 * time.Millisecond}, 0, 4},
		{"only the local zone slower: spills", map[string]time.Duration{"z1": 30 * time.Millisecond, "z2": time.Millisecond}, 1000, 2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, c := newWith(DefaultConfig(), WithZone("z1"))
			b.Update(zoned(map[string]string{"a:1": "z1", "b:1": "z1", "c:1": "z1", "d:1": "z2", "e:1": "z2", "f:1": "z2"}))
			settle(t, b, c, map[string]time.Duration{"z1": time.Millisecond, "z2": time.Millisecond})
			c.advance(exploreEvery / 2) // the other zone's samples are old news
			if got := runZoned(t, b, c, 2000, tc.later); got < tc.min || got > tc.max {
				t.Fatalf("%d of 2000 picks left the zone, want %d-%d", got, tc.min, tc.max)
			}
		})
	}
}
