package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/demoapp/faults"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/test/harness"
)

// timedApp records how long each request spent in the app it wraps.
type timedApp struct {
	next  http.Handler
	mu    sync.Mutex
	spent []time.Duration
}

func (a *timedApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t0 := time.Now()
	a.next.ServeHTTP(w, r)
	a.mu.Lock()
	a.spent = append(a.spent, time.Since(t0))
	a.mu.Unlock()
}

// take returns and forgets the times recorded so far.
func (a *timedApp) take() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.spent
	a.spent = nil
	return s
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(p*float64(len(d))))]
}

// TestAdaptiveConcurrencyProtectsApp, end to end with the real binaries in
// local mode: the demo app's echo while slow (its slow start with a
// capacity: 4 requests at a time, 10 ms each, the rest queued) sits behind a Server with an adaptive concurrency limit
// (a RateLimit's adaptiveConcurrency in the store file). After a light
// warm-up, 48 callers surge at once. The limit learns the app's latency
// and refuses the excess at once (503 overloaded, proxy=inbound), so the
// requests the app takes spend far less time in it than the same surge
// without the limit, where they wait in the app's queue. The figures are
// printed; the test asserts only that the limited surge's median time in
// the app is at most half the unlimited one's, and that every answer is a
// 200 or the proxy's 503 overloaded.
func TestAdaptiveConcurrencyProtectsApp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a mesh")
	}
	requireBinaries(t)
	// The demo app's echo, slow from its first request (for longer than
	// the test): 10 ms per request, 4 at a time, the rest queued
	// (trellis-demo-app --slow-start-for 1h --slow-start-delay 10ms
	// --slow-start-capacity 4).
	clock := faults.NewClock(nil)
	app := &timedApp{next: echo.NewHandler(echo.Config{Name: "echo-1", Log: slog.New(slog.DiscardHandler), Clock: clock,
		SlowStart: &faults.SlowStart{For: time.Hour, Delay: 10 * time.Millisecond, Capacity: 4, Clock: clock}})}
	appAddr := serveHTTP(t, app)
	appPort := port(t, appAddr)
	store := harness.Store{
		Services: []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "client", Namespace: ns, ServiceAccount: "client"},
			{Name: "echo-1", Namespace: ns, ServiceAccount: "echo", Labels: map[string]string{"app": "echo"},
				Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: appPort}}},
		},
		Policies: []meshconfig.Object{{
			APIVersion: "policy.trellis.io/v1alpha1", Kind: "Server",
			Metadata: meshconfig.ObjectMeta{Name: "echo-http", Namespace: ns},
			Spec:     []byte(fmt.Sprintf(`{"podSelector": {"matchLabels": {"app": "echo"}}, "port": %d, "accessPolicy": "all-authenticated"}`, appPort)),
		}},
	}
	limit := meshconfig.Object{
		APIVersion: "policy.trellis.io/v1alpha1", Kind: "RateLimit",
		Metadata: meshconfig.ObjectMeta{Name: "echo-adaptive", Namespace: ns},
		Spec:     []byte(`{"targetRef": {"kind": "Server", "name": "echo-http"}, "adaptiveConcurrency": {"enabled": true, "minLimit": 2, "maxLimit": 48}}`),
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	server := m.StartProxy(harness.ProxySpec{Workload: "echo-1", AppAddr: appAddr})
	client := m.StartProxy(harness.ProxySpec{Workload: "client"})
	waitReady(t, server, client)
	c := meshClient(client.OutboundAddr, 30*time.Second)

	// surge runs callers closed-loop for d and returns the answers.
	surge := func(callers int, d time.Duration) (ok, overloaded int, bad []string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		for range callers {
			wg.Go(func() {
				for ctx.Err() == nil {
					resp, _, err := get(context.Background(), c, "/")
					mu.Lock()
					switch {
					case err != nil:
						bad = append(bad, err.Error())
					case resp.StatusCode == http.StatusOK:
						ok++
					case resp.StatusCode == http.StatusServiceUnavailable && strings.HasPrefix(resp.Header.Get("Trellis-Proxy-Error"), "overloaded;"):
						overloaded++
						mu.Unlock()
						// A refused caller backs off a little, as a
						// client should; without it the callers' spinning
						// takes the machine's CPU from the test.
						time.Sleep(10 * time.Millisecond)
						continue
					default:
						bad = append(bad, fmt.Sprintf("%d %s", resp.StatusCode, resp.Header.Get("Trellis-Error")))
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return ok, overloaded, bad
	}
	phase := func(name string, adapt time.Duration) time.Duration {
		surge(2, 5*time.Second) // light load: the app's normal latency
		app.take()
		surge(48, adapt) // the limit (if any) adapts
		app.take()
		ok, over, bad := surge(48, 5*time.Second)
		spent := app.take()
		p50, p99 := pct(spent, 0.5), pct(spent, 0.99)
		t.Logf("%s: 48 callers for 5 s: %d served (time in the app p50 %v, p99 %v), %d refused 503 overloaded, %d other answers",
			name, ok, p50.Round(time.Millisecond), p99.Round(time.Millisecond), over, len(bad))
		if len(bad) > 0 {
			t.Fatalf("%s: %d answers neither 200 nor the proxy's 503 overloaded, e.g. %s", name, len(bad), bad[0])
		}
		if ok == 0 {
			t.Fatalf("%s: nothing served", name)
		}
		return p50
	}

	unlimited := phase("without a limit", 2*time.Second)
	st := m.Store()
	st.Policies = append(st.Policies, limit)
	m.WriteStore(st)
	// The store is reloaded within a second; the limit shows in the
	// server proxy's gauge once requests pass it.
	if err := eventually(30*time.Second, func() error {
		surge(1, 200*time.Millisecond)
		ms, err := server.Metrics(t.Context())
		if err != nil {
			return err
		}
		if ms.Value("trellis_concurrency_limit", nil) < 1 {
			return fmt.Errorf("no concurrency limit on echo-1's proxy")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	limited := phase("adaptive limit", 12*time.Second)
	if limited*2 > unlimited {
		t.Fatalf("with the adaptive limit the app's median time is %v, without it %v: want at most half", limited, unlimited)
	}
}
