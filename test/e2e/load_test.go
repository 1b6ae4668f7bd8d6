package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/test/harness"
)

// loadResult counts what a steady load did.
type loadResult struct {
	sent, ok atomic.Int64
	mu       sync.Mutex
	failures []string
	servedBy map[string]int
}

func (r *loadResult) fail(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failures) < 20 {
		r.failures = append(r.failures, s)
	}
}

func (r *loadResult) check(t *testing.T) {
	t.Helper()
	sent, ok := r.sent.Load(), r.ok.Load()
	t.Logf("load: sent %d, succeeded %d, served by %v", sent, ok, r.servedBy)
	if sent == 0 {
		t.Fatal("no request was sent")
	}
	if sent != ok {
		t.Errorf("sent %d requests, %d succeeded; first failures:\n%v", sent, ok, r.failures)
	}
}

// runLoad sends GET path at rps through c for d, from a pool of workers,
// and returns when every request has ended. A request succeeds with a 200
// and, for "/", the whole body.
func runLoad(ctx context.Context, c *http.Client, path string, rps int, d time.Duration) *loadResult {
	r := &loadResult{servedBy: make(map[string]int)}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				r.sent.Add(1)
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, body, err := get(rctx, c, path)
				cancel()
				switch {
				case err != nil:
					r.fail(fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				case resp.StatusCode != 200 || (path == "/" && len(body) != echo.RootBodySize):
					r.fail(fmt.Sprintf("%s: %s, %d bytes, served by %q", time.Now().Format("15:04:05.000"), resp.Status, len(body), resp.Header.Get("Echo-Served-By")))
				default:
					r.ok.Add(1)
					r.mu.Lock()
					r.servedBy[resp.Header.Get("Echo-Served-By")]++
					r.mu.Unlock()
				}
			}
		}()
	}
	tick := time.NewTicker(time.Second / time.Duration(rps))
	defer tick.Stop()
	end := time.After(d)
loop:
	for {
		select {
		case <-tick.C:
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				break loop
			}
		case <-end:
			break loop
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	return r
}

// waitGauge waits until px's gauge equals want.
func waitGauge(t *testing.T, px *harness.Proxy, name string, labels map[string]string, want float64, d time.Duration) {
	t.Helper()
	var series string
	err := eventually(d, func() error {
		ms, err := px.Metrics(context.Background())
		if err != nil {
			return err
		}
		series = ms.Series(name)
		if v, found := ms.Sum(name, labels); !found || v != want {
			return fmt.Errorf("%s%v = %g (found %v), want %g", name, labels, v, found, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v\nseries:\n%s", px.Name, err, series)
	}
}

// TestEndpointRemovedUnderLoad removes one of two endpoints from the store
// during steady load, then stops that workload: no request may fail.
func TestEndpointRemovedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	requireBinaries(t)
	app1, app2 := startApp(t, "echo-1"), startApp(t, "echo-2")
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, app1.Addr)}}},
			{Name: "echo-2", Namespace: ns, ServiceAccount: "echo", Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, app2.Addr)}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	s1 := m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: app1.Addr})
	s2 := m.StartProxy(harness.ProxySpec{Workload: "echo-2", AppAddr: app2.Addr})
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, s1, s2, client)
	c := meshClient(client.OutboundAddr, 15*time.Second)
	defer c.CloseIdleConnections()
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	endpointsOf := map[string]string{"dst_service": echoAuthority}
	waitGauge(t, client, "trellis_endpoints", endpointsOf, 2, 10*time.Second)

	done := make(chan *loadResult, 1)
	// The app's latency dominates, so the balancer spreads the load over
	// both endpoints rather than favouring the one with the warmer path.
	go func() { done <- runLoad(t.Context(), c, "/slow?ms=20", 200, 10*time.Second) }()

	time.Sleep(2 * time.Second)
	at2s := app2.served.Load()
	time.Sleep(time.Second)
	before2 := app2.served.Load()
	st := m.Store()
	st.Workload("echo-2").Endpoints = nil
	m.WriteStore(st)
	waitGauge(t, client, "trellis_endpoints", endpointsOf, 1, 10*time.Second)
	if err := s2.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if exited, _ := s2.Process.Wait(15 * time.Second); !exited {
		t.Error("echo-2's proxy did not exit within 15s of SIGTERM")
	}
	app2.stop()

	r := <-done
	r.check(t)
	if before2 == at2s {
		t.Error("echo-2 served nothing in the second before its removal: the test did not exercise a live endpoint")
	}
	if app1.served.Load() == 0 {
		t.Error("echo-1 served nothing")
	}
}

// TestControllerKilledUnderLoad kills the controller for about five seconds
// during steady load: the data plane keeps serving from what it knows, and
// reconnects when the controller is back.
func TestControllerKilledUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 15*time.Second)
	defer c.CloseIdleConnections()
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	dest := map[string]string{"service": "destination"}
	waitGauge(t, b.client, "trellis_control_plane_connected", dest, 1, 10*time.Second)

	done := make(chan *loadResult, 1)
	go func() { done <- runLoad(t.Context(), c, "/", 100, 12*time.Second) }()

	time.Sleep(2 * time.Second)
	b.mesh.Controller().Kill()
	killed := time.Now()
	waitGauge(t, b.client, "trellis_control_plane_connected", dest, 0, 5*time.Second)
	time.Sleep(time.Until(killed.Add(5 * time.Second)))
	b.mesh.StartController()
	waitGauge(t, b.client, "trellis_control_plane_connected", dest, 1, 20*time.Second)

	r := <-done
	r.check(t)
	// And the mesh still serves afterwards, with the new controller.
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("request after the restart: %v %v", resp, err)
	}
}
