package outbound_test

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
)

// zoneApp answers after its zone's delay and counts by zone.
type zoneApp struct {
	delay  *atomic.Int64 // nanoseconds, shared by a zone
	served *atomic.Int64
}

func (a zoneApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.served.Add(1)
	time.Sleep(time.Duration(a.delay.Load()))
	_, _ = io.WriteString(w, "ok")
}

// Real round trips through the outbound proxy under steady load, with
// three endpoints in the proxy's zone and three in another: the traffic
// stays in the zone while it is healthy, and spills over within seconds
// once the zone turns slow.
func TestZoneAwareUnderLoad(t *testing.T) {
	var localDelay, remoteDelay, localServed, remoteServed atomic.Int64
	localDelay.Store(int64(time.Millisecond))
	remoteDelay.Store(int64(time.Millisecond))
	var eps []balance.Endpoint
	for i := range 6 {
		app := zoneApp{&localDelay, &localServed}
		zone := "zone-a"
		if i >= 3 {
			app, zone = zoneApp{&remoteDelay, &remoteServed}, "zone-b"
		}
		ln := listen(t)
		srv := &http.Server{Handler: app}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		eps = append(eps, balance.Endpoint{Addr: ln.Addr().String(), Weight: 1, Zone: zone})
	}
	p := newPair(t, pairOpts{app: http.NotFoundHandler()})
	p.bal.SetZone("zone-a")
	p.bal.Update(eps) // the pair's own endpoint is left out

	defer paced(t, p, 8, 0)()
	// share is the fraction of requests served out of the zone over d.
	share := func(d time.Duration) (float64, int64) {
		l0, r0 := localServed.Load(), remoteServed.Load()
		time.Sleep(d)
		l, r := localServed.Load()-l0, remoteServed.Load()-r0
		return float64(r) / float64(max(l+r, 1)), l + r
	}

	time.Sleep(3 * time.Second) // new endpoints' estimates settle
	// Both zones share this machine's CPUs: on a loaded one (CI runs the
	// cluster suites beside these tests) a scheduling stall can make the
	// local zone look slow for a moment and spill. A balancer blind to
	// zones sends half out, so a 2 s window with under 1 % out, within a
	// generous ceiling, proves the preference without timing on a quiet
	// machine.
	start, windows := time.Now(), 0
	within(t, 30*time.Second, "a 2 s window with under 1 % of at least 100 requests out of the healthy zone", func() bool {
		s, n := share(2 * time.Second)
		windows++
		t.Logf("healthy zone: %.1f %% of %d requests left it", 100*s, n)
		return s < 0.01 && n >= 100
	})
	t.Logf("healthy zone kept its traffic in window %d (%s)", windows, time.Since(start).Round(100*time.Millisecond))
	localDelay.Store(int64(30 * time.Millisecond))
	within(t, 10*time.Second, "traffic spilling out of the slow zone", func() bool {
		s, _ := share(500 * time.Millisecond)
		return s > 0.5
	})
	st := p.bal.Status()
	t.Logf("cross-zone picks %d of %d, spilling %v", st.CrossZone, st.Picks, st.Spilling)
	if !st.Spilling || st.CrossZone == 0 {
		t.Fatalf("status %+v: not spilling", st)
	}
}
