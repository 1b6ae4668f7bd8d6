package k8se2e

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"text/template"
	"time"
)

// splitApp is the traffic suites' server: two versions of an echo app
// that log every request they receive, a Service per version and the
// parent Service `echo` (both versions) that HTTPRoutes attach to, plus
// the client's ServiceAccount.
var splitApp = template.Must(template.New("splitApp").Parse(`
apiVersion: v1
kind: Namespace
metadata:
  name: {{.NS}}
  annotations: {trellis.io/inject: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: {{.NS}}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: {{.NS}}}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
{{- range .Versions}}
---
apiVersion: v1
kind: Service
metadata: {name: echo-{{.}}, namespace: {{$.NS}}}
spec:
  selector: {app: echo, version: {{.}}}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-{{.}}, namespace: {{$.NS}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo, version: {{.}}}}
  template:
    metadata: {labels: {app: echo, version: {{.}}}}
    spec:
      containers:
      - name: app
        image: {{$.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=echo-{{.}}, --listen=0.0.0.0:8080, --proxy=, --access-log]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 2
{{- end}}
`[1:]))

// splitRoute is the GAMMA HTTPRoute of the split: parent the Service echo,
// the weights of echo-v1 and echo-v2.
var splitRoute = template.Must(template.New("splitRoute").Parse(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-split, namespace: {{.NS}}}
spec:
  parentRefs:
  - {group: "", kind: Service, name: echo, port: 80}
  rules:
  - backendRefs:
    - {name: echo-v1, port: 80, weight: {{.V1}}}
    - {name: echo-v2, port: 80, weight: {{.V2}}}
`[1:]))

// TestTrafficSplit is the suite "traffic-split" (issue 13): an HTTPRoute
// whose parent is the Service echo splits its traffic between echo-v1 and
// echo-v2, 90/10, then 50/50, then 0/100, edited while a steady client
// keeps calling. Each window's split is counted where the requests arrive
// (the two apps' access logs) and must be within 2 % of the weights; no
// request of any client may fail across the shifts.
func TestTrafficSplit(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "traffic-split")
	const ns = "e2e-traffic-split"
	c.policyInstall(t)
	c.namespaces(t, ns)
	c.waitInjector(t)
	c.mustRun(t, render(t, splitApp, map[string]any{
		"NS": ns, "Image": c.image("demo-app"), "Versions": []string{"v1", "v2"},
	}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "echo-v1", "echo-v2")
	pods := map[string]string{"v1": c.waitRunning(t, ns, "version=v1"), "v2": c.waitRunning(t, ns, "version=v2")}
	applySplit := func(v1, v2 int) {
		c.mustRun(t, render(t, splitRoute, map[string]any{"NS": ns, "V1": v1, "V2": v2}), "apply", "--server-side", "-f", "-")
	}
	applySplit(90, 10)
	c.waitRouteAccepted(t, ns, "httproute", "echo-split")

	// The steady client runs across every shift: none of its requests
	// may fail.
	phases := []struct{ v1, v2 int }{{90, 10}, {50, 50}, {0, 100}}
	// 200 rps: at 400 a node stall of 160 ms fills the client's 64
	// requests in flight and it drops requests (seen with a busy node).
	const rps, window = 200, 50 * time.Second // 10,000 requests a window
	steady := caller{Name: "steady", NS: ns, SA: "client", Port: "80"}
	// A phase is the 5 s settle, the window job's start and the window:
	// the steady client outlasts the last shift.
	steadyFor := time.Duration(len(phases)) * (window + 25*time.Second)
	steady.start(t, c, ns, 20, steadyFor)
	c.waitJobsRunning(t, []caller{steady})

	for i, ph := range phases {
		if i > 0 {
			applySplit(ph.v1, ph.v2)
		}
		// The route reaches every client proxy in well under a second
		// (the controller's 250 ms settle and one stream message); the
		// window starts after 5 s so it measures the new weights only.
		time.Sleep(5 * time.Second)
		w := caller{Name: fmt.Sprintf("window-%d", i+1), NS: ns, SA: "client", Port: "80"}
		w.start(t, c, ns, rps, window)
		res := c.jobLoadResult(t, ns, w.Name, window+3*time.Minute)
		got := map[string]int{}
		for v, pod := range pods {
			got[v] = arrivals(c.appAccessLog(t, ns, pod), callerTag(w))
		}
		total := got["v1"] + got["v2"]
		t.Logf("window %d, weights %d/%d: client %+v; arrived v1 %d, v2 %d (%.2f %% / %.2f %%)",
			i+1, ph.v1, ph.v2, res, got["v1"], got["v2"], pct(got["v1"], total), pct(got["v2"], total))
		if res.Failed+res.Dropped+res.Cancelled != 0 {
			t.Errorf("window %d: the client lost requests: %+v", i+1, res)
		}
		if uint64(total) != res.OK {
			t.Errorf("window %d: %d requests arrived at the two versions, the client counted %d successes", i+1, total, res.OK)
		}
		want := float64(ph.v1) / float64(ph.v1+ph.v2) * 100
		if d := math.Abs(pct(got["v1"], total) - want); total == 0 || d > 2 {
			t.Errorf("window %d: v1 got %.2f %% of %d requests, want %.0f %% ± 2", i+1, pct(got["v1"], total), total, want)
		}
	}
	res := c.jobLoadResult(t, ns, steady.Name, steadyFor+3*time.Minute)
	t.Logf("steady client across the shifts: %+v", res)
	if res.Failed+res.Dropped+res.Cancelled != 0 || res.OK == 0 {
		t.Errorf("the steady client lost requests across the shifts: %+v", res)
	}
}

func pct(n, total int) float64 {
	if total == 0 {
		return 0
	}
	return float64(n) * 100 / float64(total)
}

// appAccessLog returns the access log lines of a pod's app container.
func (c *cluster) appAccessLog(t *testing.T, ns, pod string) []string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(c.mustRun(t, nil, "-n", ns, "logs", pod, "-c", "app"), "\n") {
		if strings.Contains(l, "msg=access") {
			lines = append(lines, l)
		}
	}
	return lines
}

// waitRouteAccepted waits until the controller has written a parent
// status with Accepted=True on a route (kind httproute or grpcroute) and
// logs how long it took.
func (c *cluster) waitRouteAccepted(t *testing.T, ns, kind, name string) {
	t.Helper()
	start := time.Now()
	eventually(t, time.Minute, kind+"/"+name+" Accepted", func() error {
		out, err := c.run(t.Context(), nil, "-n", ns, "get", kind, name, "-o", "json")
		if err != nil {
			return err
		}
		var r struct {
			Status struct {
				Parents []struct {
					ControllerName string `json:"controllerName"`
					Conditions     []struct{ Type, Status, Reason, Message string }
				} `json:"parents"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			return err
		}
		for _, p := range r.Status.Parents {
			for _, cond := range p.Conditions {
				if cond.Type == "Accepted" && cond.Status == "True" {
					return nil
				}
			}
		}
		return fmt.Errorf("no Accepted=True parent yet: %+v", r.Status.Parents)
	})
	t.Logf("%s/%s Accepted after %s", kind, name, time.Since(start).Round(100*time.Millisecond))
}
