package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// zonedApp answers after its zone's delay and counts what it served.
type zonedApp struct {
	delay  *atomic.Int64 // nanoseconds
	served *atomic.Int64
}

func (a zonedApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	time.Sleep(time.Duration(a.delay.Load()))
	a.served.Add(1)
	_, _ = io.WriteString(w, "ok")
}

// TestZoneAware: zone-aware routing on real binaries in local mode, with
// the zones set in the store file as the EndpointSlices set them on a
// cluster. The client proxy learns its own zone (zone-a) from the
// Destination service; of echo's four endpoints two are in zone-a, two in
// zone-b. Under steady load the traffic stays in zone-a while it is
// healthy; when zone-a's apps turn slow it spills over to zone-b within
// seconds (the time is printed), counted by trellis_cross_zone_requests_total;
// when they recover it comes back. No request fails throughout.
func TestZoneAware(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh")
	}
	requireBinaries(t)
	var delayA, delayB, servedA, servedB atomic.Int64
	delayA.Store(int64(time.Millisecond))
	delayB.Store(int64(time.Millisecond))
	store := harness.Store{
		Services:  []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{{Name: "client", Namespace: ns, ServiceAccount: "client", Zone: "zone-a"}},
	}
	apps := map[string]string{}
	for i, zone := range []string{"zone-a", "zone-a", "zone-b", "zone-b"} {
		app := zonedApp{&delayA, &servedA}
		if zone == "zone-b" {
			app = zonedApp{&delayB, &servedB}
		}
		addr := serveHTTP(t, app)
		name := fmt.Sprintf("echo-%d", i+1)
		apps[name] = addr
		store.Workloads = append(store.Workloads, harness.Workload{Name: name, Namespace: ns, ServiceAccount: "echo", Zone: zone,
			Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, addr)}}})
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	var all []*harness.Proxy
	for name, addr := range apps {
		all = append(all, m.StartProxy(harness.ProxySpec{Workload: name, AppAddr: addr}))
	}
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, append(all, client)...)

	// Steady load: 40 requests a second from 4 callers.
	hc := meshClient(client.OutboundAddr, 20*time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	var sent, failed atomic.Int64
	done := make(chan struct{})
	for range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				sent.Add(1)
				resp, err := hc.Get("http://echo.e2e:80/")
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						t.Logf("request failed: %v", err)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
					t.Logf("request answered %d: %s", resp.StatusCode, resp.Header.Get("Trellis-Error"))
				}
			}
		}()
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			for range 4 {
				<-done
			}
		})
	}
	defer stop()
	// outShare is the share of requests served out of zone-a over d.
	outShare := func(d time.Duration) (float64, int64) {
		a0, b0 := servedA.Load(), servedB.Load()
		time.Sleep(d)
		a, b := servedA.Load()-a0, servedB.Load()-b0
		return float64(b) / float64(max(a+b, 1)), a + b
	}
	// The client proxy learns its zone from its first answers.
	t0 := time.Now()
	if err := eventually(30*time.Second, func() error {
		if s, n := outShare(2 * time.Second); s > 0.02 || n < 40 {
			return fmt.Errorf("%.1f %% of %d requests left zone-a", 100*s, n)
		}
		return nil
	}); err != nil {
		t.Fatalf("healthy zone: %v\n%s", err, client.Process.LogTail(20))
	}
	// A figure, not an assertion: on a busy machine a local sample can
	// look twice a fresh remote one for a moment and spill a few requests.
	s, n := outShare(3 * time.Second)
	t.Logf("healthy: %.1f %% of %d requests left zone-a in the next 3 s (a 2 s window under 2 %% after %v)", 100*s, n, time.Since(t0).Round(time.Second))

	delayA.Store(int64(40 * time.Millisecond))
	t1 := time.Now()
	if err := eventually(30*time.Second, func() error {
		if s, _ := outShare(time.Second); s <= 0.5 {
			return fmt.Errorf("%.0f %% out of zone-a", 100*s)
		}
		return nil
	}); err != nil {
		t.Fatalf("zone-a slow: traffic did not spill over: %v", err)
	}
	t.Logf("zone-a slow (40 ms): most traffic out of it %v after", time.Since(t1).Round(100*time.Millisecond))
	ms, err := client.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	cross := ms.Value("trellis_cross_zone_requests_total", nil)
	if cross == 0 {
		t.Fatal("trellis_cross_zone_requests_total is 0 while spilling over")
	}

	delayA.Store(int64(time.Millisecond))
	t2 := time.Now()
	if err := eventually(60*time.Second, func() error {
		if s, _ := outShare(2 * time.Second); s > 0.1 {
			return fmt.Errorf("%.0f %% still out of zone-a", 100*s)
		}
		return nil
	}); err != nil {
		t.Fatalf("zone-a recovered: traffic did not come back: %v", err)
	}
	t.Logf("zone-a recovered: traffic back in it %v after; cross-zone requests counted while spilling: %.0f", time.Since(t2).Round(100*time.Millisecond), cross)
	stop()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed", f, sent.Load())
	}
	t.Logf("%d requests, none failed", sent.Load())
}
