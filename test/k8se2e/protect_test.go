package k8se2e

import (
	"fmt"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// The protection suites of issue 13 (retries-budget, circuit-break,
// slow-start, rate-limit) share these: a namespace with the client's
// ServiceAccount and the Service echo (annotations optional), and echo
// Deployments labelled app=echo (so that the Service takes them all) and
// group=<name>, each logging every request it receives.
var protectBase = template.Must(template.New("protectBase").Parse(`
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
metadata:
  name: echo
  namespace: {{.NS}}
{{- with .Annotations}}
  annotations:
{{- range $k, $v := .}}
    {{$k}}: {{printf "%q" $v}}
{{- end}}
{{- end}}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
`[1:]))

var protectDeployment = template.Must(template.New("protectDeployment").Parse(`
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo-{{.Name}}, namespace: {{.NS}}}
spec:
  replicas: {{.Replicas}}
  selector: {matchLabels: {app: echo, group: {{.Name}}}}
  template:
    metadata: {labels: {app: echo, group: {{.Name}}}}
    spec:
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=echo-{{.Name}}, --listen=0.0.0.0:8080, --proxy=, --access-log{{range .Args}}, "{{.}}"{{end}}]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
{{- if .TCPProbe}}
          tcpSocket: {port: 8080}
{{- else}}
          httpGet: {path: /healthz, port: 8080}
{{- end}}
          periodSeconds: 2
`[1:]))

// echoGroup is one Deployment of protectDeployment.
type echoGroup struct {
	Name     string
	Replicas int
	Args     []string // extra trellis-demo-app flags
	// TCPProbe: a TCP readiness probe, which the inbound proxy answers
	// itself; an HTTP one goes through the inbound proxy's limits.
	TCPProbe bool
}

// protectSetup applies the namespace, the client's ServiceAccount and the
// Service echo (with annotations), then the groups, and waits for them.
func (c *cluster) protectSetup(t *testing.T, ns string, annotations map[string]string, groups ...echoGroup) {
	t.Helper()
	c.policyInstall(t)
	c.namespaces(t, ns)
	c.waitInjector(t)
	c.applyService(t, ns, annotations)
	for _, g := range groups {
		c.applyGroup(t, ns, g)
	}
}

// applyService applies the namespace and the Service echo; server-side
// apply drops the annotations a previous call set and this one does not.
func (c *cluster) applyService(t *testing.T, ns string, annotations map[string]string) {
	t.Helper()
	c.mustRun(t, render(t, protectBase, map[string]any{"NS": ns, "Annotations": annotations}), "apply", "--server-side", "-f", "-")
}

// applyGroup applies an echo group and waits for its rollout.
func (c *cluster) applyGroup(t *testing.T, ns string, g echoGroup) {
	t.Helper()
	c.mustRun(t, render(t, protectDeployment, map[string]any{
		"NS": ns, "Name": g.Name, "Replicas": g.Replicas, "Args": g.Args, "TCPProbe": g.TCPProbe, "Image": c.image("demo-app"),
	}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "echo-"+g.Name)
}

// groupPods returns the meshed, running pods of an echo group.
func (c *cluster) groupPods(t *testing.T, ns, group string) map[string]string {
	t.Helper()
	out := map[string]string{} // name -> IP
	for _, p := range c.pods(t, ns, "group="+group) {
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := meshed(p, c.tag); err != nil {
			t.Fatal(err)
		}
		out[p.Name] = p.Status.PodIP
	}
	return out
}

// groupArrivals counts a caller's requests in the access logs of a
// group's pods.
func (c *cluster) groupArrivals(t *testing.T, ns string, pods map[string]string, cl caller) int {
	t.Helper()
	n := 0
	for pod := range pods {
		n += arrivals(c.appAccessLog(t, ns, pod), callerTag(cl))
	}
	return n
}

// callerPod returns the pod of a caller's Job once it runs.
func (c *cluster) callerPod(t *testing.T, cl caller) string {
	t.Helper()
	c.waitJobsRunning(t, []caller{cl})
	for _, p := range c.pods(t, cl.NS, "app="+cl.Name) {
		if p.DeletionTimestamp == nil {
			return p.Name
		}
	}
	t.Fatalf("caller %s: no pod", cl.Name)
	return ""
}

// proxyMetrics scrapes a pod's proxy (port 4191) through the API server.
func (c *cluster) proxyMetrics(t *testing.T, ns, pod string) harness.Metrics {
	t.Helper()
	m, err := c.metrics(t.Context(), ns, pod, 4191)
	if err != nil {
		t.Fatalf("metrics of %s's proxy: %v", pod, err)
	}
	return m
}

// logSeries logs the series of the named metrics of one scrape.
func logSeries(t *testing.T, who string, m harness.Metrics, names ...string) {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		if s := m.Series(n); s != "" {
			b.WriteString(s)
			b.WriteString("\n")
		} else {
			fmt.Fprintf(&b, "%s: absent\n", n)
		}
	}
	t.Logf("%s:\n%s", who, b.String())
}

// loadSummary formats a loadgen result for the logs.
func loadSummary(r loadResult) string {
	return fmt.Sprintf("sent %d, ok %d, failed %d, cancelled %d, dropped %d, statuses %v, latency p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		r.Sent, r.OK, r.Failed, r.Cancelled, r.Dropped, r.Statuses, r.P50LatencyMS, r.P99LatencyMS, r.MaxLatencyMS)
}

// waitSeconds sleeps d unless the test ends first.
func waitSeconds(t *testing.T, d time.Duration) {
	select {
	case <-t.Context().Done():
	case <-time.After(d):
	}
}
