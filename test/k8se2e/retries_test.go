package k8se2e

import (
	"testing"
	"text/template"
	"time"
)

// retryRoute is the GAMMA HTTPRoute of retries-budget: parent the Service
// echo, every request retried on 500 up to 3 times within the default
// budget (20 % of the requests plus 10 a second) written out. The
// annotations are given in both spellings in flight (docs/traffic.md's
// codes/attempts/budget-ratio and internal/routemodel's
// http-statuses/limit/budget-percent); each reader ignores the other's.
var retryRoute = template.Must(template.New("retryRoute").Parse(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-retry
  namespace: {{.NS}}
  annotations:
    retry.trellis.io/codes: "500"
    retry.trellis.io/http-statuses: "500"
    retry.trellis.io/attempts: "3"
    retry.trellis.io/limit: "3"
    retry.trellis.io/budget-ratio: "0.2"
    retry.trellis.io/budget-percent: "20"
    retry.trellis.io/budget-min-per-second: "10"
spec:
  parentRefs:
  - {group: "", kind: Service, name: echo, port: 80}
  rules:
  - backendRefs:
    - {name: echo, port: 80}
`[1:]))

// The retry budget of retryRoute, and the budget's window.
const (
	budgetRatio  = 0.2
	budgetFloor  = 10 // retries a second
	budgetWindow = 10 * time.Second
)

// TestRetriesBudget is the suite "retries-budget" (issue 13): one echo
// replica failing half its requests (--fail-rate 0.5), an HTTPRoute with a
// retry policy on 500. The client sees the retried success rate (above the
// app's 50 %), and the app, counting at its access log, sees at most
// originals × (1 + ratio) + floor × (seconds + one window): the budget's
// bound, with the first window's floor paid at once. Without the budget
// (3 retries) it would see about 1.875 times the originals.
func TestRetriesBudget(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "retries-budget")
	const ns = "e2e-retries-budget"
	// The breaker is off: a replica failing 50 % is the point here, and
	// it is the only one anyway (the floor never ejects it).
	c.protectSetup(t, ns, map[string]string{"balancer.trellis.io/failure-accrual": "off"},
		echoGroup{Name: "flaky", Replicas: 1, Args: []string{"--fail-rate=0.5"}})
	pods := c.groupPods(t, ns, "flaky")
	c.mustRun(t, render(t, retryRoute, map[string]any{"NS": ns}), "apply", "--server-side", "-f", "-")
	c.waitRouteAccepted(t, ns, "httproute", "echo-retry")
	waitSeconds(t, 3*time.Second) // the route reaches the client proxies

	const rps, run = 100, 30 * time.Second
	cl := caller{Name: "client", NS: ns, SA: "client", Port: "80"}
	cl.start(t, c, ns, rps, run)
	pod := c.callerPod(t, cl)
	// The proxy's counters, read before the Job ends (its sidecar ends
	// with it): retries made and refused by the budget.
	waitSeconds(t, run-5*time.Second)
	m, err := c.metrics(t.Context(), ns, pod, 4191)
	if err != nil {
		t.Logf("client proxy metrics (late, the Job may have ended): %v", err)
	} else {
		logSeries(t, "client proxy", m, "trellis_retries_total", "trellis_retry_budget_exhausted_total", "trellis_responses_total")
		if m.Value("trellis_retries_total", map[string]string{"reason": "status"}) == 0 {
			t.Error("the client proxy counted no retry on status")
		}
		if n, _ := m.Sum("trellis_retry_budget_exhausted_total", nil); n == 0 {
			t.Error("the budget refused no retry: a 50 % failing backend with 3 retries must exhaust it")
		}
	}
	res := c.jobLoadResult(t, ns, cl.Name, run+3*time.Minute)
	arrived := c.groupArrivals(t, ns, pods, cl)
	secs := res.ElapsedS
	if secs <= 0 {
		secs = run.Seconds()
	}
	bound := float64(res.Sent)*(1+budgetRatio) + budgetFloor*(secs+budgetWindow.Seconds())
	noBudget := float64(res.Sent) * (1 + 0.5 + 0.25 + 0.125)
	t.Logf("retries-budget: client %s", loadSummary(res))
	t.Logf("retries-budget: success at the client %.1f %% (the app fails 50 %%); the app saw %d requests for %d originals (%.2f×), %d retries; budget bound %.0f, without a budget ~%.0f",
		pct(int(res.OK), int(res.Sent)), arrived, res.Sent, float64(arrived)/float64(max(res.Sent, 1)), arrived-int(res.Sent), bound, noBudget)
	if res.Sent == 0 || res.Dropped+res.Cancelled != 0 {
		t.Fatalf("the client did not send its load: %+v", res)
	}
	for code := range res.Statuses {
		if code != "200" && code != "500" {
			t.Errorf("status %s at the client: only the app's 200 and 500 are expected, %v", code, res.Statuses)
		}
	}
	if got := pct(int(res.OK), int(res.Sent)); got < 55 {
		t.Errorf("client success %.1f %%: retries must lift it well above the app's 50 %%", got)
	}
	if arrived <= int(res.Sent) {
		t.Errorf("the app saw %d requests for %d originals: no retry reached it", arrived, res.Sent)
	}
	if float64(arrived) > bound {
		t.Errorf("the app saw %d requests, over the budget's bound %.0f (%d originals × %.1f + %d/s × %.0f s)",
			arrived, bound, res.Sent, 1+budgetRatio, budgetFloor, secs+budgetWindow.Seconds())
	}
}
