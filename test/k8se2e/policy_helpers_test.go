package k8se2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"text/template"
	"time"

	demopb "github.com/trellis-mesh/trellis/demoapp/pb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// policyInstall is the shared default install (sharedInstall), with the Gateway API route CRDs the per-route policies
// attach to. The cluster-wide default inbound policy stays the default
// (all-unauthenticated): each suite sets its own per namespace.
func (c *cluster) policyInstall(t *testing.T) {
	t.Helper()
	c.gatewayRouteCRDs(t)
	c.sharedInstall(t)
}

// gatewayRouteCRDs applies the HTTPRoute and GRPCRoute CRDs of the Gateway
// API release go.mod pins, from the module cache, if the cluster lacks
// them (a user installs them the same way, before Trellis).
func (c *cluster) gatewayRouteCRDs(t *testing.T) {
	t.Helper()
	if _, err := c.run(t.Context(), nil, "get", "crd", "httproutes.gateway.networking.k8s.io"); err == nil {
		return
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api")
	cmd.Dir = repoRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating sigs.k8s.io/gateway-api: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "standard")
	for _, f := range []string{"gateway.networking.k8s.io_httproutes.yaml", "gateway.networking.k8s.io_grpcroutes.yaml"} {
		c.mustRun(t, nil, "apply", "--server-side", "-f", filepath.Join(dir, f))
	}
	c.mustRun(t, nil, "wait", "--for=condition=Established", "crd/httproutes.gateway.networking.k8s.io", "crd/grpcroutes.gateway.networking.k8s.io", "--timeout=1m")
}

// namespaces is cluster.namespace for several namespaces deleted together
// at the end (one kubectl delete waits for all: the suites' budget).
func (c *cluster) namespaces(t *testing.T, names ...string) {
	t.Helper()
	for _, ns := range names {
		if _, err := c.run(t.Context(), nil, "get", "namespace", ns); err == nil {
			t.Logf("namespace %s left by a previous run: deleting it", ns)
			c.deleteNamespace(t, ns)
		}
	}
	t.Cleanup(func() {
		args := append([]string{"delete", "namespace", "--ignore-not-found", "--wait=true", "--timeout=3m"}, names...)
		if _, err := c.run(context.WithoutCancel(t.Context()), nil, args...); err != nil {
			t.Errorf("deleting namespaces %v: %v", names, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, ns := range names {
				c.dump(t, ns)
			}
		}
	})
}

// suiteTimer logs the suite's duration at its end (the policy suites'
// budget in make e2e is ~6 minutes together).
func suiteTimer(t *testing.T, suite string) {
	start := time.Now()
	t.Cleanup(func() { t.Logf("suite %s took %s", suite, time.Since(start).Round(100*time.Millisecond)) })
}

// policyApp is the server every policy suite guards: an echo app logging
// every request it receives (--access-log) on 8080 (HTTP, h2c and gRPC)
// and a second one on 8081 for an opaque (TCP) Server, in a namespace
// whose default inbound policy is Default; plus the callers' namespaces
// and ServiceAccounts.
var policyApp = template.Must(template.New("policyApp").Parse(`
apiVersion: v1
kind: Namespace
metadata:
  name: {{.NS}}
  annotations:
    trellis.io/inject: enabled
{{- if .Default}}
    config.trellis.io/default-inbound-policy: {{.Default}}
{{- end}}
{{- range .ServiceAccounts}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: {{.}}, namespace: {{$.NS}}}
{{- end}}
{{- if .Other}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {{.Other}}
  annotations: {trellis.io/inject: enabled}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: {{.Other}}}
{{- end}}
{{- if .Plain}}
---
apiVersion: v1
kind: Namespace
metadata: {name: {{.Plain}}}
{{- end}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: {{.NS}}}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: tcp, port: 81, targetPort: 8081}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: {{.NS}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      serviceAccountName: echo
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=echo, --listen=0.0.0.0:8080, --proxy=, --access-log]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
{{- if .HTTPProbe}}
          httpGet: {path: /healthz, port: 8080}
{{- else}}
          tcpSocket: {port: 8080}
{{- end}}
          periodSeconds: 2
      - name: tcp
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=echo, --name=echo-tcp, --listen=0.0.0.0:8081, --proxy=, --access-log]
        ports: [{name: tcp, containerPort: 8081}]
`[1:]))

type policyAppParams struct {
	NS, Other, Plain, Image, Default string
	ServiceAccounts                  []string
	HTTPProbe                        bool
}

// callerJob is a loadgen Job calling Target with Path as ServiceAccount SA
// ("" in an unmeshed namespace: its default one).
var callerJob = template.Must(template.New("callerJob").Parse(`
apiVersion: batch/v1
kind: Job
metadata: {name: {{.Name}}, namespace: {{.NS}}}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: {{.Name}}}}
    spec:
      restartPolicy: Never
{{- if .SA}}
      serviceAccountName: {{.SA}}
{{- end}}
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=loadgen, --proxy=, "--target={{.Target}}", "--path={{.Path}}", --rps={{.RPS}}, --duration={{.Duration}}, --timeout=5s]
`[1:]))

// caller is one client of the echo app and the decision it must get.
type caller struct {
	Name    string // Job name, and the caller= tag of its requests
	NS, SA  string
	Port    string // echo's Service port: "80" (HTTP) or "81" (opaque TCP)
	Path    string // default /echo
	Allowed bool   // what the enforcing policy decides
}

func (cl caller) path() string {
	p := cl.Path
	if p == "" {
		p = "/echo"
	}
	return p + "?caller=" + cl.Name
}

// start applies the caller's Job: RPS requests per second for d.
func (cl caller) start(t *testing.T, c *cluster, appNS string, rps int, d time.Duration) {
	t.Helper()
	c.mustRun(t, render(t, callerJob, map[string]any{
		"Name": cl.Name, "NS": cl.NS, "SA": cl.SA, "Image": c.image("demo-app"),
		"Target": "echo." + appNS + ".svc.cluster.local:" + cl.Port, "Path": cl.path(),
		"RPS": rps, "Duration": d.String(),
	}), "apply", "--server-side", "-f", "-")
}

// tally is one line of a suite's count: every request of one caller.
type tally struct {
	caller                   string
	sent, allowed, denied    uint64
	wronglyAllowed           uint64 // allowed although the policy denies it
	wronglyDenied            uint64 // refused although the policy allows it
	other                    uint64 // neither a success nor the expected refusal
	arrived                  int    // requests the app's access log shows
	wantAllowed, refusedHTTP bool
	policyDenies             bool // the enforcing policy refuses this caller
}

// settle names the host probes' wrong outcomes: while the policy is
// enforced every allowed probe was wrongly allowed (the Servers deny the
// node), while it is audited every refused one was wrongly denied.
func (tl *tally) settle(enforce bool) {
	if enforce {
		tl.wronglyAllowed = tl.allowed
	} else {
		tl.wronglyDenied = tl.denied
	}
}

// tallyLoad counts a Job's result. enforce false (audit): everything must
// be let through. An HTTP refusal is a 403 from the server's proxy. On the
// opaque (TCP) port the server's proxy closes the connection; what the
// loadgen sees then depends on its own proxy (which carries the app's
// HTTP over the mesh: a 403 or a 502) or is no response at all, so any
// answer but a success counts as refused there; the app's log proves none
// arrived.
func tallyLoad(cl caller, res loadResult, enforce bool) tally {
	tl := tally{caller: cl.Name, sent: res.Sent, allowed: res.OK, wantAllowed: cl.Allowed || !enforce, refusedHTTP: cl.Port == "80", policyDenies: !cl.Allowed}
	refused := res.Statuses["403"]
	if !tl.refusedHTTP {
		refused = res.Sent - res.OK - res.Cancelled
	}
	tl.denied = refused
	if tl.wantAllowed {
		tl.wronglyDenied = res.Sent - res.OK
	} else {
		tl.wronglyAllowed = res.OK
		tl.other = res.Sent - res.OK - refused
	}
	tl.other += res.Cancelled + res.Dropped
	return tl
}

// report logs the suite's count table and fails on any wrong decision, any
// caller that sent nothing, and any disagreement with the app's log.
func report(t *testing.T, suite string, rows []tally) {
	t.Helper()
	var b strings.Builder
	var sum tally
	fmt.Fprintf(&b, "%s: %-16s %6s %8s %7s %15s %14s %6s %8s\n", suite, "caller", "sent", "allowed", "denied", "wrongly-allowed", "wrongly-denied", "other", "arrived")
	for _, r := range rows {
		fmt.Fprintf(&b, "%s: %-16s %6d %8d %7d %15d %14d %6d %8d\n", suite, r.caller, r.sent, r.allowed, r.denied, r.wronglyAllowed, r.wronglyDenied, r.other, r.arrived)
		sum.sent += r.sent
		sum.allowed += r.allowed
		sum.denied += r.denied
		sum.wronglyAllowed += r.wronglyAllowed
		sum.wronglyDenied += r.wronglyDenied
		sum.other += r.other
		sum.arrived += r.arrived
		switch {
		case r.sent == 0:
			t.Errorf("%s: sent nothing", r.caller)
		case r.wronglyAllowed+r.wronglyDenied+r.other != 0:
			t.Errorf("%s: %d wrongly allowed, %d wrongly denied, %d neither allowed nor refused as expected", r.caller, r.wronglyAllowed, r.wronglyDenied, r.other)
		case !r.wantAllowed && r.arrived != 0:
			t.Errorf("%s: refused, yet the app logged %d of its requests", r.caller, r.arrived)
		case r.wantAllowed && uint64(r.arrived) < r.allowed:
			t.Errorf("%s: %d allowed, but the app logged only %d of them", r.caller, r.allowed, r.arrived)
		}
	}
	fmt.Fprintf(&b, "%s: %-16s %6d %8d %7d %15d %14d %6d %8d", suite, "TOTAL", sum.sent, sum.allowed, sum.denied, sum.wronglyAllowed, sum.wronglyDenied, sum.other, sum.arrived)
	t.Logf("request count:\n%s", b.String())
}

// accessLog returns the echo app's access log lines (both containers).
func (c *cluster) accessLog(t *testing.T, ns, pod string) []string {
	t.Helper()
	var lines []string
	for _, ctr := range []string{"app", "tcp"} {
		out := c.mustRun(t, nil, "-n", ns, "logs", pod, "-c", ctr)
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "msg=access") {
				lines = append(lines, l)
			}
		}
	}
	return lines
}

// arrivals counts the access log lines whose text contains tag.
func arrivals(lines []string, tag string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, tag) {
			n++
		}
	}
	return n
}

// callerTag is what the access log shows of a loadgen caller's requests.
func callerTag(cl caller) string { return `uri="` + cl.path() + `"` }

// echoPod waits for the echo Deployment and returns its meshed pod.
func (c *cluster) echoPod(t *testing.T, ns string) (name, ip string) {
	t.Helper()
	c.rollout(t, ns, "echo")
	var live []string
	for _, p := range c.pods(t, ns, "app=echo") {
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := meshed(p, c.tag); err != nil {
			t.Fatal(err)
		}
		live = append(live, p.Name)
		name, ip = p.Name, p.Status.PodIP
	}
	if len(live) != 1 {
		t.Fatalf("echo pods: %v, want 1", live)
	}
	return name, ip
}

// Host probes: the test process is an unmeshed client on the node, which
// reaches pod IPs over the harness's bridge; it checks the refusals the
// loadgen cannot show: gRPC PERMISSION_DENIED and an opaque TCP connection
// closed before a byte is answered.
const (
	hostGRPCAgent = "e2e-host-grpc"
	hostProbes    = 10
)

// hostGRPC makes n Echo.Unary calls to ip:8080; enforce says they must
// all end PERMISSION_DENIED (else: all OK).
func hostGRPC(t *testing.T, ip string, n int, enforce bool) tally {
	t.Helper()
	tl := tally{caller: "host-grpc", wantAllowed: !enforce, refusedHTTP: true, policyDenies: true}
	cc, err := grpc.NewClient(net.JoinHostPort(ip, "8080"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent(hostGRPCAgent))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := demopb.NewEchoClient(cc)
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		_, err := client.Unary(ctx, &demopb.EchoRequest{Payload: []byte("hi")})
		cancel()
		tl.sent++
		code := status.Code(err)
		switch {
		case code == codes.OK:
			tl.allowed++
		case code == codes.PermissionDenied:
			tl.denied++
			if i == 0 {
				t.Logf("host gRPC call refused: %v", err)
			}
		default:
			tl.other++
			t.Logf("host gRPC call %d: %v", i, err)
		}
	}
	tl.settle(enforce)
	return tl
}

// opaqueProbe is what the node's TCP probe writes: bytes no detector takes
// for HTTP or TLS, as a client of a raw TCP protocol sends.
const opaqueProbe = "\x00\x01trellis-e2e-opaque-probe\n"

// hostTCP opens n connections to ip:8081 (the opaque Server) and writes
// opaqueProbe on each. Refused: closed with no byte answered. Allowed: the
// app answered (its HTTP server's own 400 for bytes that are not HTTP, not
// a proxy error, which carries Trellis-Proxy-Error), so it also arrived;
// the access log cannot show it, it logs only requests.
func hostTCP(t *testing.T, ip string, n int, enforce bool) tally {
	t.Helper()
	tl := tally{caller: "host-tcp", wantAllowed: !enforce, policyDenies: true}
	for i := 0; i < n; i++ {
		tl.sent++
		got, err := tcpExchange(t.Context(), net.JoinHostPort(ip, "8081"), opaqueProbe)
		switch {
		case err != nil:
			tl.other++
			t.Logf("host TCP %d: %v", i, err)
		case got == "":
			tl.denied++
		case strings.HasPrefix(got, "HTTP/1.1 400 Bad Request") && !strings.Contains(got, "Trellis-Proxy-Error"):
			tl.allowed++
			tl.arrived++
		default:
			tl.other++
			t.Logf("host TCP %d: unexpected answer %q", i, got)
		}
	}
	tl.settle(enforce)
	return tl
}

// tcpExchange writes payload and returns what came back before the peer
// closed (or 5 s passed); an error only when it could not connect.
func tcpExchange(ctx context.Context, addr, payload string) (string, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// The write may fail once the proxy has closed: that is a refusal too.
	_, _ = io.WriteString(conn, payload)
	b, err := io.ReadAll(conn)
	var ne net.Error
	if err != nil && errors.As(err, &ne) && ne.Timeout() {
		return string(b) + "(timeout)", nil
	}
	return string(b), nil
}

// httpProbe is a plain HTTP request for tcpExchange.
const httpProbe = "GET /echo?caller=host-http HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"

// authzCounts logs and returns the echo proxy's authorization counters:
// allowed, denied and audited (would-be denials let through), all labels.
func (c *cluster) authzCounts(t *testing.T, ns, pod string) (allow, deny, audit float64) {
	t.Helper()
	m, err := c.metrics(t.Context(), ns, pod, 4191)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"trellis_inbound_authz_allow_total", "trellis_inbound_authz_deny_total", "trellis_inbound_authz_audit_total"}
	var b strings.Builder
	for _, n := range names {
		b.WriteString(m.Series(n))
		b.WriteString("\n")
	}
	t.Logf("echo proxy's authorization metrics:\n%s", b.String())
	return m.Value(names[0], nil), m.Value(names[1], nil), m.Value(names[2], nil)
}

// sortedKeys lists a map's keys in order, for stable logs.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
