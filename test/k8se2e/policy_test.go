package k8se2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"text/template"
	"time"
)

// The policy suites (issue 12, part 6) share one Trellis install
// (policyInstall) and each works in its own namespaces. Every caller's
// every request is counted: sent, allowed, denied, wrongly allowed, wrongly
// denied (both must be 0), and how many the app's own access log shows.

// serverPolicies is a Server per echo port (HTTP detection on 8080,
// opaque on 8081), both with Access when no AuthorizationPolicy allows a
// call, each allowing the identities of Allowed.
var serverPolicies = template.Must(template.New("serverPolicies").Parse(`
{{- range $s := .Servers}}
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: {{$s.Name}}, namespace: {{$.NS}}}
spec:
  podSelector: {matchLabels: {app: echo}}
  port: {{$s.Port}}
  protocol: {{$s.Protocol}}
  accessPolicy: {{$.Access}}
---
{{- if $.Allowed}}
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: {{$s.Name}}-clients, namespace: {{$.NS}}}
spec:
  targetRef: {group: policy.trellis.io, kind: Server, name: {{$s.Name}}}
  identities:
{{- range $.Allowed}}
  - spiffe://cluster.local/ns/{{$.NS}}/sa/{{.}}
{{- end}}
---
{{- end}}
{{- end}}
`[1:]))

type policyServer struct{ Name, Port, Protocol string }

var echoServers = []policyServer{{"echo-http", "8080", "unknown"}, {"echo-tcp", "8081", "opaque"}}

func (c *cluster) applyServerPolicies(t *testing.T, ns, access string, servers []policyServer, allowed ...string) {
	t.Helper()
	c.mustRun(t, render(t, serverPolicies, map[string]any{"NS": ns, "Access": access, "Servers": servers, "Allowed": allowed}),
		"apply", "--server-side", "-f", "-")
}

// matrix is the callers of policy-deny, policy-audit and policy-cp-down:
// the allowed identity over HTTP and TCP; the same namespace with the
// wrong ServiceAccount; the allowed ServiceAccount's name in another
// namespace; an unmeshed pod. (The test process adds unmeshed gRPC and
// TCP calls from the node.)
func matrix(ns string) []caller {
	return []caller{
		{Name: "allowed", NS: ns, SA: "client", Port: "80", Allowed: true},
		{Name: "allowed-tcp", NS: ns, SA: "client", Port: "81", Allowed: true},
		{Name: "wrong-sa", NS: ns, SA: "intruder", Port: "80"},
		{Name: "wrong-sa-tcp", NS: ns, SA: "intruder", Port: "81"},
		{Name: "other-ns", NS: ns + "-other", SA: "client", Port: "80"},
		{Name: "unmeshed", NS: ns + "-plain", Port: "80"},
	}
}

// deployMatrix creates the namespaces, the echo app and its Servers with
// access (deny or audit; the namespace default too) allowing sa/client,
// and waits until the Servers' policy is in force on the echo proxy.
func (c *cluster) deployMatrix(t *testing.T, ns, access string) (pod, ip string) {
	t.Helper()
	c.policyInstall(t)
	c.namespaces(t, ns, ns+"-other", ns+"-plain")
	c.waitInjector(t)
	c.mustRun(t, render(t, policyApp, policyAppParams{
		NS: ns, Other: ns + "-other", Plain: ns + "-plain", Image: c.image("demo-app"), Default: access,
		ServiceAccounts: []string{"echo", "client", "intruder"},
	}), "apply", "--server-side", "-f", "-")
	c.applyServerPolicies(t, ns, access, echoServers, "client")
	pod, ip = c.echoPod(t, ns)
	c.waitServerPolicy(t, ns, pod, ip, 2)
	return pod, ip
}

// waitServerPolicy waits until the echo proxy decides with n distinct
// Servers' policies (not the namespace default): the node's unmeshed
// probes of both ports are counted under the Servers' names. It prints how
// long the controller took to get them there.
func (c *cluster) waitServerPolicy(t *testing.T, ns, pod, ip string, n int) {
	t.Helper()
	start := time.Now()
	eventually(t, time.Minute, "the Servers' policy in force on the echo proxy", func() error {
		client := &http.Client{Timeout: 3 * time.Second}
		if resp, err := client.Get("http://" + net.JoinHostPort(ip, "8080") + "/echo?caller=host-warmup"); err == nil {
			resp.Body.Close()
		}
		_, _ = tcpExchange(t.Context(), net.JoinHostPort(ip, "8081"), opaqueProbe)
		m, err := c.metrics(t.Context(), ns, pod, 4191)
		if err != nil {
			return err
		}
		servers := map[string]bool{}
		for _, name := range []string{"trellis_inbound_authz_allow_total", "trellis_inbound_authz_deny_total", "trellis_inbound_authz_audit_total"} {
			for _, s := range series(m, name) {
				if srv := s.labels["server"]; srv != "" && !strings.HasPrefix(srv, "default") {
					servers[srv] = true
				}
			}
		}
		if len(servers) < n {
			return fmt.Errorf("decisions by Servers %v, want %d", sortedKeys(servers), n)
		}
		return nil
	})
	t.Logf("Servers' policy in force on the echo proxy %s after the echo pod was ready", time.Since(start).Round(100*time.Millisecond))
}

// runMatrix sends the matrix's load (and the node's probes) and returns
// the count rows, the app's access log checked against them.
func (c *cluster) runMatrix(t *testing.T, ns, pod, ip string, enforce bool, load time.Duration, during func()) []tally {
	t.Helper()
	var grpcRow, tcpRow tally
	rows, logLines := c.runCallers(t, ns, pod, matrix(ns), enforce, load, func() {
		if during != nil {
			during()
		}
		grpcRow = hostGRPC(t, ip, hostProbes, enforce)
		tcpRow = hostTCP(t, ip, hostProbes, enforce)
	})
	grpcRow.arrived = arrivals(logLines, hostGRPCAgent)
	return append(rows, grpcRow, tcpRow)
}

// runCallers starts a loadgen Job per caller, runs during (may be nil)
// while they send, and returns each caller's count row with what the
// app's access log shows arrived, and that log.
func (c *cluster) runCallers(t *testing.T, ns, pod string, callers []caller, enforce bool, load time.Duration, during func()) ([]tally, []string) {
	t.Helper()
	for _, cl := range callers {
		cl.start(t, c, ns, 10, load)
	}
	if during != nil {
		during()
	}
	var rows []tally
	for _, cl := range callers {
		res := c.jobLoadResult(t, cl.NS, cl.Name, load+3*time.Minute)
		t.Logf("%s: %+v", cl.Name, res)
		rows = append(rows, tallyLoad(cl, res, enforce))
	}
	logLines := c.accessLog(t, ns, pod)
	for i, cl := range callers {
		rows[i].arrived = arrivals(logLines, callerTag(cl))
	}
	return rows, logLines
}

// TestPolicyDeny is the suite "policy-deny": a namespace at deny; only
// sa/client may call echo (HTTP and opaque TCP). Its calls all succeed;
// the wrong ServiceAccount, another namespace, an unmeshed pod and the
// node (HTTP, gRPC, TCP) are all refused (403, PERMISSION_DENIED, closed)
// and the app's access log shows none of them.
func TestPolicyDeny(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-deny")
	const ns = "e2e-pol-deny"
	pod, ip := c.deployMatrix(t, ns, "deny")
	rows := c.runMatrix(t, ns, pod, ip, true, 10*time.Second, nil)
	report(t, "policy-deny", rows)
	allow, deny, audit := c.authzCounts(t, ns, pod)
	checkProxyCounts(t, rows, allow, deny, audit, true)
}

// TestPolicyAudit is the suite "policy-audit": the same policies with the
// Servers (and the namespace) in audit: nothing is refused, every request
// arrives, and every would-be denial is counted as audited.
func TestPolicyAudit(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-audit")
	const ns = "e2e-pol-audit"
	pod, ip := c.deployMatrix(t, ns, "audit")
	rows := c.runMatrix(t, ns, pod, ip, false, 10*time.Second, nil)
	report(t, "policy-audit", rows)
	allow, deny, audit := c.authzCounts(t, ns, pod)
	checkProxyCounts(t, rows, allow, deny, audit, false)
}

// checkProxyCounts compares the echo proxy's authorization counters with
// the callers' counts. HTTP and gRPC decisions are per request, so the
// proxy counted at least as many as the callers saw (the node's warm-up
// probes add some); opaque TCP ones are per connection and are left out.
func checkProxyCounts(t *testing.T, rows []tally, allow, deny, audit float64, enforce bool) {
	t.Helper()
	var allowed, refused, wouldDeny uint64
	for _, r := range rows {
		if !r.refusedHTTP {
			continue
		}
		if r.policyDenies {
			wouldDeny += r.sent
			refused += r.denied
		} else {
			allowed += r.allowed
		}
	}
	t.Logf("echo proxy counted allow=%g deny=%g audit=%g; the callers saw %d allowed, %d refused, %d would-be denials (HTTP and gRPC)",
		allow, deny, audit, allowed, refused, wouldDeny)
	switch {
	case enforce && (allow < float64(allowed) || deny < float64(refused) || audit != 0):
		t.Errorf("echo proxy: allow %g (want >= %d), deny %g (want >= %d), audit %g (want 0)", allow, allowed, deny, refused, audit)
	case !enforce && (deny != 0 || audit < float64(wouldDeny)):
		t.Errorf("echo proxy in audit: deny %g (want 0), audit %g (want >= %d, every would-be denial)", deny, audit, wouldDeny)
	}
}

// TestPolicyCPDown is the suite "policy-cp-down": policy-deny's callers
// under load while the controller is scaled to zero for
// TRELLIS_E2E_OUTAGE (default 60 s): every decision is unchanged.
func TestPolicyCPDown(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-cp-down")
	outage := e2eOutage(t, 60*time.Second)
	const ns = "e2e-pol-cpdown"
	pod, ip := c.deployMatrix(t, ns, "deny")
	// The controller comes back even if the test fails half way (the
	// test's context is cancelled by then).
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		out, _ := c.run(ctx, nil, "-n", "trellis-system", "get", "deployment/trellis-controller", "-o", "jsonpath={.spec.replicas}")
		if out != "0" {
			return
		}
		if _, err := c.run(ctx, nil, "-n", "trellis-system", "scale", "deployment/trellis-controller", "--replicas=1"); err != nil {
			t.Errorf("scaling the controller back: %v", err)
		}
	})
	load := outage + 40*time.Second
	var down time.Duration
	rows := c.runMatrix(t, ns, pod, ip, true, load, func() {
		c.waitJobsRunning(t, matrix(ns))
		c.scaleController(t, 0)
		start := time.Now()
		eventually(t, 30*time.Second, "echo's proxy notices the controller is gone", func() error {
			m, err := c.metrics(t.Context(), ns, pod, 4191)
			if err != nil {
				return err
			}
			// The policy stream is the one that matters here; it must
			// exist (a missing series would pass vacuously).
			if v, found := m.Sum("trellis_control_plane_connected", map[string]string{"service": "policy"}); !found || v != 0 {
				return fmt.Errorf("trellis_control_plane_connected{service=policy} = %g (found %v)", v, found)
			}
			t.Logf("echo proxy's control-plane streams with the controller down:\n%s", m.Series("trellis_control_plane_connected"))
			return nil
		})
		// The node's probes run during the outage too.
		g := hostGRPC(t, ip, hostProbes, true)
		tc := hostTCP(t, ip, hostProbes, true)
		report(t, "policy-cp-down (node, controller down)", []tally{g, tc})
		time.Sleep(time.Until(start.Add(outage)))
		down = time.Since(start)
		c.scaleController(t, 1)
	})
	t.Logf("controller was down for %s", down.Round(time.Second))
	report(t, "policy-cp-down", rows)
	allow, deny, audit := c.authzCounts(t, ns, pod)
	checkProxyCounts(t, rows, allow, deny, audit, true)
}

// scaleController scales the shared install's controller and waits.
func (c *cluster) scaleController(t *testing.T, n int) {
	t.Helper()
	c.mustRun(t, nil, "-n", "trellis-system", "scale", "deployment/trellis-controller", fmt.Sprintf("--replicas=%d", n))
	if n == 0 {
		c.mustRun(t, nil, "-n", "trellis-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=trellis-controller", "--timeout=2m")
		return
	}
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
}

// waitJobsRunning waits until every caller's app container runs.
func (c *cluster) waitJobsRunning(t *testing.T, callers []caller) {
	t.Helper()
	for _, cl := range callers {
		eventually(t, 2*time.Minute, "caller "+cl.Name+" running", func() error {
			for _, p := range c.pods(t, cl.NS, "app="+cl.Name) {
				for _, s := range p.Status.ContainerStatuses {
					if s.Name == "app" && s.State.Running != nil {
						return nil
					}
				}
			}
			return fmt.Errorf("no running pod")
		})
	}
}

// routePolicies: echo's HTTP Server denies by default; the HTTPRoute
// healthz (GET /healthz) is open to everyone, unauthenticated (the
// kubelet's probes included); admin (/admin) only to sa/admin.
var routePolicies = template.Must(template.New("routePolicies").Parse(`
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: echo-http, namespace: {{.NS}}}
spec:
  podSelector: {matchLabels: {app: echo}}
  port: 8080
  accessPolicy: deny
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: healthz, namespace: {{.NS}}}
spec:
  parentRefs: [{group: policy.trellis.io, kind: Server, name: echo-http}]
  rules:
  - matches: [{path: {type: Exact, value: /healthz}, method: GET}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: admin, namespace: {{.NS}}}
spec:
  parentRefs: [{group: policy.trellis.io, kind: Server, name: echo-http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /admin}}]
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: healthz-open, namespace: {{.NS}}}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: healthz}
  unauthenticated: true
---
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: admin-only, namespace: {{.NS}}}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}
  identities: [spiffe://cluster.local/ns/{{.NS}}/sa/admin]
`[1:]))

// TestPolicyRoute is the suite "policy-route": per-route authorization.
// /healthz is open to the kubelet (the pod's HTTP readiness probe makes it
// ready only through the route) and to unauthenticated callers; /admin
// only to sa/admin; any other path is refused (the Server denies).
func TestPolicyRoute(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-route")
	const ns = "e2e-pol-route"
	c.policyInstall(t)
	c.namespaces(t, ns, ns+"-plain")
	c.waitInjector(t)
	c.mustRun(t, render(t, policyApp, policyAppParams{
		NS: ns, Plain: ns + "-plain", Image: c.image("demo-app"), Default: "deny", HTTPProbe: true,
		ServiceAccounts: []string{"echo", "client", "admin"},
	}), "apply", "--server-side", "-f", "-")
	c.mustRun(t, render(t, routePolicies, map[string]string{"NS": ns}), "apply", "--server-side", "-f", "-")
	pod, _ := c.echoPod(t, ns) // ready: the kubelet's GET /healthz was allowed

	callers := []caller{
		{Name: "unmeshed-healthz", NS: ns + "-plain", Port: "80", Path: "/healthz", Allowed: true},
		{Name: "unmeshed-admin", NS: ns + "-plain", Port: "80", Path: "/admin"},
		{Name: "client-healthz", NS: ns, SA: "client", Port: "80", Path: "/healthz", Allowed: true},
		{Name: "client-admin", NS: ns, SA: "client", Port: "80", Path: "/admin"},
		{Name: "client-echo", NS: ns, SA: "client", Port: "80", Path: "/echo"},
		{Name: "admin-admin", NS: ns, SA: "admin", Port: "80", Path: "/admin", Allowed: true},
	}
	rows, logLines := c.runCallers(t, ns, pod, callers, true, 10*time.Second, nil)
	probes := arrivals(logLines, "ua=kube-probe/")
	t.Logf("kubelet readiness probes that reached the app: %d", probes)
	if probes == 0 {
		t.Errorf("no kubelet probe reached the app through the healthz route")
	}
	report(t, "policy-route", rows)
	m, err := c.metrics(t.Context(), ns, pod, 4191)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("echo proxy's authorization metrics:\n%s\n%s", m.Series("trellis_inbound_authz_allow_total"), m.Series("trellis_inbound_authz_deny_total"))
	admin := "spiffe://cluster.local/ns/" + ns + "/sa/admin"
	if v := m.Value("trellis_inbound_authz_allow_total", map[string]string{"client_id": admin}); v < float64(rows[5].allowed) {
		t.Errorf("allowed /admin calls of %s counted %g, the caller saw %d", admin, v, rows[5].allowed)
	}
}

// TestPolicyLive is the suite "policy-live": two clients under steady
// load, then the AuthorizationPolicy changed to keep one and revoke the
// other. The revoked one is refused from then on (the time the change
// took is printed; the test fails only past 30 s) and the app logs none of
// its requests after that; the kept one loses no request.
func TestPolicyLive(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-live")
	const ns = "e2e-pol-live"
	c.policyInstall(t)
	c.namespace(t, ns)
	c.waitInjector(t)
	c.mustRun(t, render(t, policyApp, policyAppParams{
		NS: ns, Image: c.image("demo-app"), Default: "deny", ServiceAccounts: []string{"echo", "keep", "revoke"},
	}), "apply", "--server-side", "-f", "-")
	c.applyServerPolicies(t, ns, "deny", echoServers, "keep", "revoke")
	pod, ip := c.echoPod(t, ns)
	c.waitServerPolicy(t, ns, pod, ip, 2)

	keep := caller{Name: "keep", NS: ns, SA: "keep", Port: "80", Allowed: true}
	revoke := caller{Name: "revoke", NS: ns, SA: "revoke", Port: "80"}
	const load = 40 * time.Second
	keep.start(t, c, ns, 20, load)
	revoke.start(t, c, ns, 20, load)
	c.waitJobsRunning(t, []caller{keep, revoke})
	revokeID := "spiffe://cluster.local/ns/" + ns + "/sa/revoke"
	eventually(t, 30*time.Second, "the revoked client's first allowed requests", func() error {
		m, err := c.metrics(t.Context(), ns, pod, 4191)
		if err != nil {
			return err
		}
		if m.Value("trellis_inbound_authz_allow_total", map[string]string{"client_id": revokeID}) == 0 {
			return fmt.Errorf("no allowed request from %s yet", revokeID)
		}
		return nil
	})
	time.Sleep(3 * time.Second)

	c.applyServerPolicies(t, ns, "deny", echoServers, "keep")
	changed := time.Now()
	var took time.Duration
	for took == 0 {
		m, err := c.metrics(t.Context(), ns, pod, 4191)
		if err == nil && m.Value("trellis_inbound_authz_deny_total", map[string]string{"client_id": revokeID}) > 0 {
			took = time.Since(changed)
			break
		}
		if time.Since(changed) > 30*time.Second {
			t.Fatalf("the revocation of %s was not in force within 30 s", revokeID)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("policy change in force after %s (first denial of the revoked client seen in the echo proxy's metrics, polled every 250 ms)", took.Round(10*time.Millisecond))
	// Anything in flight at the change has ended 2 s later; from then on
	// not one more request of the revoked client may reach the app.
	time.Sleep(2 * time.Second)
	settled := arrivals(c.accessLog(t, ns, pod), callerTag(revoke))

	keepRes := c.jobLoadResult(t, ns, "keep", load+3*time.Minute)
	revokeRes := c.jobLoadResult(t, ns, "revoke", load+3*time.Minute)
	t.Logf("keep: %+v\nrevoke: %+v", keepRes, revokeRes)
	logLines := c.accessLog(t, ns, pod)
	keepRow := tallyLoad(keep, keepRes, true)
	keepRow.arrived = arrivals(logLines, callerTag(keep))
	final := arrivals(logLines, callerTag(revoke))
	// The revoked client: allowed before the change, refused after it.
	revokeRow := tally{caller: "revoke", sent: revokeRes.Sent, allowed: revokeRes.OK, denied: revokeRes.Statuses["403"],
		wronglyAllowed: uint64(final - settled), refusedHTTP: true, wantAllowed: true, arrived: final}
	revokeRow.other = revokeRes.Sent - revokeRes.OK - revokeRow.denied + revokeRes.Dropped + revokeRes.Cancelled
	if revokeRow.denied == 0 {
		t.Errorf("the revoked client was never refused")
	}
	report(t, "policy-live", []tally{keepRow, revokeRow})
	if keepRes.Failed+keepRes.Dropped+keepRes.Cancelled != 0 {
		t.Errorf("the kept client lost requests across the change: %+v", keepRes)
	}
}

// TestPolicySuggest is the suite "policy-suggest": the demo runs, `trellis
// policy suggest` writes the policy from what the proxies saw, it is
// applied in enforce mode; then the demo keeps 100 % success while an
// unexpected meshed caller of books and the node are refused.
func TestPolicySuggest(t *testing.T) {
	c := newCluster(t)
	suiteTimer(t, "policy-suggest")
	const ns = "e2e-pol-suggest"
	c.policyInstall(t)
	c.deployDemo(t, ns, 1)
	c.mustRun(t, []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: intruder, namespace: "+ns+"}\n"), "apply", "-f", "-")
	c.startLoad(t, loadParams{NS: ns, Name: "observed", Target: "web." + ns + ".svc.cluster.local:80", RPS: 10, Duration: 15 * time.Second})
	if res := c.jobLoadResult(t, ns, "observed", 3*time.Minute); res.OK == 0 || res.Failed != 0 {
		t.Fatalf("the demo before any policy: %+v", res)
	}

	out, err := c.trellis(t.Context(), nil, "policy", "suggest", "-n", ns)
	if err != nil {
		t.Fatalf("trellis policy suggest -n %s: %v\n%s", ns, err, out)
	}
	t.Logf("trellis policy suggest -n %s:\n%s", ns, out)
	if !strings.Contains(out, "kind: Server") || !strings.Contains(out, "kind: AuthorizationPolicy") {
		t.Fatalf("the suggestion has no Server or AuthorizationPolicy")
	}
	c.mustRun(t, []byte(out), "apply", "--server-side", "-f", "-")
	applied := time.Now()

	// In force once the node, which the demo never saw, is refused by
	// every server.
	pods := map[string]string{}
	for _, app := range []string{"web", "books", "authors"} {
		p := c.pods(t, ns, "app="+app)[0]
		pods[app] = p.Status.PodIP
	}
	eventually(t, time.Minute, "the suggested policy in force", func() error {
		for _, app := range sortedKeys(pods) {
			got, err := tcpExchange(t.Context(), net.JoinHostPort(pods[app], "8080"), httpProbe)
			if err != nil {
				return err
			}
			if got != "" && !strings.HasPrefix(got, "HTTP/1.1 403") {
				return fmt.Errorf("%s still answers the node: %.40q", app, got)
			}
		}
		return nil
	})
	t.Logf("suggested policy in force on every server %s after kubectl apply", time.Since(applied).Round(100*time.Millisecond))

	demo := caller{Name: "demo", NS: ns, SA: "loadgen", Allowed: true}
	intruder := caller{Name: "intruder", NS: ns, SA: "intruder"}
	const load = 15 * time.Second
	c.startLoad(t, loadParams{NS: ns, Name: "demo", Target: "web." + ns + ".svc.cluster.local:80", RPS: 10, Duration: load})
	c.mustRun(t, render(t, callerJob, map[string]any{
		"Name": "intruder", "NS": ns, "SA": "intruder", "Image": c.image("demo-app"),
		"Target": "books." + ns + ".svc.cluster.local:80", "Path": "/books/1", "RPS": 10, "Duration": load.String(),
	}), "apply", "--server-side", "-f", "-")
	demoRes := c.jobLoadResult(t, ns, "demo", load+3*time.Minute)
	intruderRes := c.jobLoadResult(t, ns, "intruder", load+3*time.Minute)
	t.Logf("demo: %+v\nintruder: %+v", demoRes, intruderRes)
	demoRow, intruderRow := tallyLoad(demo.withPort("80"), demoRes, true), tallyLoad(intruder.withPort("80"), intruderRes, true)
	// The demo app logs no requests: arrivals are the proxies' counts.
	books := c.pods(t, ns, "app=books")[0].Name
	m, err := c.metrics(t.Context(), ns, books, 4191)
	if err != nil {
		t.Fatal(err)
	}
	intruderID := "spiffe://cluster.local/ns/" + ns + "/sa/intruder"
	t.Logf("books proxy's authorization metrics:\n%s\n%s", m.Series("trellis_inbound_authz_allow_total"), m.Series("trellis_inbound_authz_deny_total"))
	if v := m.Value("trellis_inbound_authz_allow_total", map[string]string{"client_id": intruderID}); v != 0 {
		t.Errorf("books' proxy allowed %g requests of %s", v, intruderID)
	}
	if v := m.Value("trellis_inbound_authz_deny_total", map[string]string{"client_id": intruderID}); v < float64(intruderRow.denied) {
		t.Errorf("books' proxy denied %g requests of %s, the caller saw %d refusals", v, intruderID, intruderRow.denied)
	}
	demoRow.arrived, intruderRow.arrived = int(demoRes.OK), 0
	report(t, "policy-suggest", []tally{demoRow, intruderRow})
}

func (cl caller) withPort(p string) caller {
	cl.Port = p
	return cl
}
