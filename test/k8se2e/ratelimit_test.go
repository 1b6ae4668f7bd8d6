package k8se2e

import (
	"strings"
	"testing"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// rateLimitPolicy: a Server on echo's port 8080 open to every caller, and
// a RateLimit of 100 requests a second (bucket 100) on it.
var rateLimitPolicy = template.Must(template.New("rateLimitPolicy").Parse(`
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: echo-http, namespace: {{.NS}}}
spec:
  podSelector: {matchLabels: {app: echo}}
  port: 8080
  accessPolicy: all-unauthenticated
---
apiVersion: policy.trellis.io/v1alpha1
kind: RateLimit
metadata: {name: echo-limit, namespace: {{.NS}}}
spec:
  targetRef: {group: policy.trellis.io, kind: Server, name: echo-http}
  requestsPerSecond: {{.RPS}}
  burst: {{.Burst}}
`[1:]))

// TestRateLimit is the suite "rate-limit" (issue 13): an inbound limit of
// 100 requests a second on echo's Server and a client sending 300 a second
// for 30 s: about 100 a second are served, every other request is a 429,
// and the app, counting at its access log, never sees more than
// limit × seconds + burst. Echo's HTTP readiness probe (GET /healthz on
// the limited port, every 2 s) is exempt: the app answers it throughout
// the overload and the pod stays Ready.
func TestRateLimit(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "rate-limit")
	const ns = "e2e-rate-limit"
	const limit, burst = 100, 100
	// An HTTP readiness probe on the limited port: the proxy exempts it.
	c.protectSetup(t, ns, nil, echoGroup{Name: "limited", Replicas: 1})
	pods := c.groupPods(t, ns, "limited")
	var echoPod string
	for p := range pods {
		echoPod = p
	}
	c.mustRun(t, render(t, rateLimitPolicy, map[string]any{"NS": ns, "RPS": limit, "Burst": burst}), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "-n", ns, "wait", "--for=condition=Accepted", "ratelimit.policy.trellis.io/echo-limit", "server.policy.trellis.io/echo-http", "--timeout=1m")
	waitSeconds(t, 5*time.Second) // the limit reaches echo's proxy

	const rps, run = 300, 30 * time.Second
	cl := caller{Name: "client", NS: ns, SA: "client", Port: "80"}
	// The proxy's count first, the app's second (and the other way round
	// at the end): a probe between the two reads is then in neither
	// baseline or in both counts, never in the app's only.
	exemptBefore := c.proxyMetrics(t, ns, echoPod).Value("trellis_ratelimit_exempt_total", map[string]string{"reason": "kubelet_probe"})
	probesBefore := probeArrivals(c.appAccessLog(t, ns, echoPod))
	cl.start(t, c, ns, rps, run)
	res := c.jobLoadResult(t, ns, cl.Name, run+3*time.Minute)
	arrived := c.groupArrivals(t, ns, pods, cl)
	probes := probeArrivals(c.appAccessLog(t, ns, echoPod)) - probesBefore
	m := c.proxyMetrics(t, ns, echoPod)
	logSeries(t, "echo proxy", m, "trellis_ratelimit_refused_total", "trellis_ratelimit_exempt_total")
	refusedAtProxy := m.Value("trellis_ratelimit_refused_total", nil)
	exempt := m.Value("trellis_ratelimit_exempt_total", map[string]string{"reason": "kubelet_probe"}) - exemptBefore

	secs := res.ElapsedS
	if secs <= 0 {
		secs = run.Seconds()
	}
	served, refused := res.Statuses["200"], res.Statuses["429"]
	bound := limit*secs + burst
	t.Logf("rate-limit: client %s", loadSummary(res))
	t.Logf("rate-limit: %d sent in %.1f s (%.0f/s): %d served (%.1f/s), %d refused with 429; the app saw %d (bound %.0f = %d/s × %.1f s + %d); echo's proxy counted %.0f refusals",
		res.Sent, secs, float64(res.Sent)/secs, served, float64(served)/secs, refused, arrived, bound, limit, secs, burst, refusedAtProxy)
	if res.Sent == 0 || res.Dropped+res.Cancelled != 0 {
		t.Fatalf("the client did not send its load: %+v", res)
	}
	if served+refused != res.Sent {
		t.Errorf("%d sent, %d served + %d refused: other answers %v", res.Sent, served, refused, res.Statuses)
	}
	if float64(served) < 0.9*limit*run.Seconds() || float64(served) > bound {
		t.Errorf("%d served in %.1f s, want about %d/s: between %.0f and %.0f", served, secs, limit, 0.9*limit*run.Seconds(), bound)
	}
	if float64(arrived) > bound {
		t.Errorf("the app saw %d requests, over limit × seconds + burst = %.0f", arrived, bound)
	}
	if uint64(arrived) != served {
		t.Errorf("the app saw %d requests, the client got %d answers 200: refused requests reached the app, or served ones did not", arrived, served)
	}
	if uint64(refusedAtProxy) < refused {
		t.Errorf("echo's proxy counted %.0f refusals, the client got %d 429s", refusedAtProxy, refused)
	}
	c.checkProbedThrough(t, ns, echoPod, probes, exempt, secs)
}

// checkProbedThrough checks that the kubelet's readiness probes (every
// 2 s) reached the app through the overload, exempt at its proxy, and
// that the pod never left Ready.
func (c *cluster) checkProbedThrough(t *testing.T, ns, pod string, probes int, exempt, secs float64) {
	t.Helper()
	t.Logf("rate-limit: during the load the app answered %d kubelet probes (one per 2 s: about %.0f); echo's proxy counted %.0f exempt", probes, secs/2, exempt)
	if float64(probes) < secs/2*0.6 {
		t.Errorf("the app answered %d kubelet probes in %.1f s of overload, want about %.0f: probes were refused", probes, secs, secs/2)
	}
	if exempt < float64(probes) {
		t.Errorf("echo's proxy counted %.0f exempt probes, the app answered %d", exempt, probes)
	}
	for _, p := range c.pods(t, ns, "group=limited") {
		if p.Name != pod {
			continue
		}
		if p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("pod %s restarted %d times", pod, p.Status.ContainerStatuses[0].RestartCount)
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				t.Logf("rate-limit: pod %s Ready=%s since %s", pod, cond.Status, cond.LastTransitionTime.UTC().Format(time.RFC3339))
				if cond.Status != corev1.ConditionTrue || time.Since(cond.LastTransitionTime.Time).Seconds() < secs {
					t.Errorf("pod %s Ready=%s since %s: it left Ready during the overload", pod, cond.Status, cond.LastTransitionTime)
				}
			}
		}
	}
}

// probeArrivals counts the kubelet's probes in an app's access log.
func probeArrivals(lines []string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, "uri=/healthz ") && strings.Contains(l, "ua=kube-probe/") {
			n++
		}
	}
	return n
}

// serviceLimitPolicy: a RateLimit on the Service echo: each client
// proxy may send it RPS requests a second (bucket Burst).
var serviceLimitPolicy = template.Must(template.New("serviceLimitPolicy").Parse(`
apiVersion: policy.trellis.io/v1alpha1
kind: RateLimit
metadata: {name: echo-quota, namespace: {{.NS}}}
spec:
  targetRef: {kind: Service, name: echo}
  requestsPerSecond: {{.RPS}}
  burst: {{.Burst}}
`[1:]))

// TestRateLimitOutbound is the outbound half of the suite "rate-limit"
// (issue 13 item 4): a RateLimit of 50 requests a second on the Service
// echo and a client sending 150 a second for 20 s: the client's own proxy
// lets about 50 a second out and answers the rest 429 (counted with
// direction=outbound there); the app, counting at its access log, sees
// exactly the 200s, and echo's proxy refuses nothing (no inbound limit).
func TestRateLimitOutbound(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "rate-limit (outbound)")
	const ns = "e2e-rate-limit-out"
	const limit, burst = 50, 50
	c.protectSetup(t, ns, nil, echoGroup{Name: "target", Replicas: 1, TCPProbe: true})
	pods := c.groupPods(t, ns, "target")
	c.mustRun(t, render(t, serviceLimitPolicy, map[string]any{"NS": ns, "RPS": limit, "Burst": burst}), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "-n", ns, "wait", "--for=condition=Accepted", "ratelimit.policy.trellis.io/echo-quota", "--timeout=1m")

	const rps, run = 150, 20 * time.Second
	cl := caller{Name: "client", NS: ns, SA: "client", Port: "80"}
	cl.start(t, c, ns, rps, run)
	// The client's proxy goes with its Job: scrape it near the run's end.
	clientPod := c.callerPod(t, cl)
	waitSeconds(t, run-5*time.Second)
	cm := c.proxyMetrics(t, ns, clientPod)
	logSeries(t, "client proxy", cm, "trellis_ratelimit_refused_total")
	refusedAtClient := cm.Value("trellis_ratelimit_refused_total", map[string]string{"direction": "outbound", "server": ns + "/echo-quota"})
	res := c.jobLoadResult(t, ns, cl.Name, run+3*time.Minute)
	arrived := c.groupArrivals(t, ns, pods, cl)
	refusedAtEcho := 0.0
	for p := range pods {
		refusedAtEcho += c.proxyMetrics(t, ns, p).Value("trellis_ratelimit_refused_total", nil)
	}

	secs := res.ElapsedS
	if secs <= 0 {
		secs = run.Seconds()
	}
	served, refused := res.Statuses["200"], res.Statuses["429"]
	bound := limit*secs + burst
	t.Logf("rate-limit (outbound): client %s", loadSummary(res))
	t.Logf("rate-limit (outbound): %d sent in %.1f s: %d served (%.1f/s), %d refused with 429 by the client's proxy (%.0f counted there %v before the end); the app saw %d (bound %.0f); echo's proxy refused %.0f",
		res.Sent, secs, served, float64(served)/secs, refused, refusedAtClient, 5*time.Second, arrived, bound, refusedAtEcho)
	if res.Sent == 0 || res.Dropped+res.Cancelled != 0 {
		t.Fatalf("the client did not send its load: %+v", res)
	}
	if served+refused != res.Sent {
		t.Errorf("%d sent, %d served + %d refused: other answers %v", res.Sent, served, refused, res.Statuses)
	}
	if float64(served) < 0.9*limit*run.Seconds() || float64(served) > bound {
		t.Errorf("%d served in %.1f s, want about %d/s: between %.0f and %.0f", served, secs, limit, 0.9*limit*run.Seconds(), bound)
	}
	if uint64(arrived) != served {
		t.Errorf("the app saw %d requests, the client got %d answers 200", arrived, served)
	}
	if refusedAtClient < 0.5*float64(refused) || refusedAtClient > float64(refused) {
		t.Errorf("the client's proxy counted %.0f outbound refusals %v before the end, the client got %d 429s in all", refusedAtClient, 5*time.Second, refused)
	}
	if refusedAtEcho != 0 {
		t.Errorf("echo's proxy refused %.0f requests: the limit is the client's", refusedAtEcho)
	}
}
