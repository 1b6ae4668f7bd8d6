package k8se2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Helpers of the identity suites (identity_test.go).

// testCertLifetime is the workload certificate lifetime the identity
// suites give the controller: proxies renew at 70 % of it (about every
// 42 s), so a change of issuer or bundle reaches every proxy within the
// suite.
const testCertLifetime = 60 * time.Second

// installIdentity is c.install with a hook between applying the manifest
// and waiting for the controller (an external issuer Secret must exist
// before the controller can mount it), with a short workload certificate
// lifetime (identity.certificateLifetime).
func (c *cluster) installIdentity(t *testing.T, beforeWait func(), flags ...string) {
	t.Helper()
	if _, err := c.run(t.Context(), nil, "get", "namespace", "trellis-system"); err == nil {
		t.Log("a previous run left Trellis installed: uninstalling it first")
		c.uninstall(t)
	}
	t.Cleanup(func() { c.uninstall(t) })
	flags = append(flags, "--set", "identity.certificateLifetime="+testCertLifetime.String())
	for _, args := range [][]string{{"install", "--crds"}, append([]string{"install"}, flags...)} {
		manifest := c.mustTrellis(t, nil, args...)
		c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
	}
	if beforeWait != nil {
		beforeWait()
	}
	c.mustRun(t, nil, "-n", "trellis-system", "rollout", "status", "deployment/trellis-controller", "--timeout=3m")
}

// createCA makes an anchor and an issuer signed by it with the trellis CLI,
// in dir: anchor.crt/key, issuer.crt/key, ca.crt.
func (c *cluster) createCA(t *testing.T, dir string, anchorValidity string) {
	t.Helper()
	c.mustTrellis(t, nil, "identity", "create-anchor", "--out-dir", dir, "--validity", anchorValidity)
	c.mustTrellis(t, nil, "identity", "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"),
		"--anchor-key", filepath.Join(dir, "anchor.key"), "--out-dir", dir)
}

// issuerSecret prints a kubernetes.io/tls issuer Secret (no Trellis
// labels, as cert-manager writes it) for a new issuer signed by dir's
// anchor, and returns it with the new issuer's fingerprint.
func (c *cluster) issuerSecret(t *testing.T, dir, commonName string) ([]byte, string) {
	t.Helper()
	return c.issuerSecretFrom(t, filepath.Join(dir, "anchor.crt"), filepath.Join(dir, "anchor.key"), commonName)
}

// issuerSecretFrom is issuerSecret for the anchor of the given files; the
// Secret's ca.crt is that anchor alone, as cert-manager's CA Issuer writes.
func (c *cluster) issuerSecretFrom(t *testing.T, anchorCert, anchorKey, commonName string) ([]byte, string) {
	t.Helper()
	out := c.mustTrellis(t, nil, "identity", "create-issuer", "--anchor-cert", anchorCert,
		"--anchor-key", anchorKey, "--common-name", commonName, "-o", "secret")
	s, err := pki.ParseTLSSecret([]byte(out))
	if err != nil {
		t.Fatalf("create-issuer -o secret printed no Secret: %v\n%s", err, out)
	}
	certs, err := pki.ParseCertsPEM(s.Cert)
	if err != nil || len(certs) == 0 {
		t.Fatalf("create-issuer -o secret: tls.crt: %v", err)
	}
	return []byte(out), pki.CertFingerprint(certs[0])
}

func fileFingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(b)
	if err != nil || len(certs) == 0 {
		t.Fatalf("%s: %v", path, err)
	}
	return pki.CertFingerprint(certs[0])
}

func bundleFingerprint(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pki.Fingerprint(certs)
}

// meshExternalIssuer installs Trellis with --identity-external-issuer and
// an issuer Secret created after the manifest, unlabelled as cert-manager
// writes it, meshes the demo under load in ns and waits until every proxy
// holds a certificate from that issuer. It returns the directory of the CA
// (anchor.crt/key) and the anchor's fingerprint.
func (c *cluster) meshExternalIssuer(t *testing.T, ns string) (dir, anchor string) {
	t.Helper()
	dir = t.TempDir()
	c.createCA(t, dir, "87600h")
	first, firstIssuer := c.issuerSecret(t, dir, "external-issuer-1")
	c.installIdentity(t, func() {
		// The controller cannot start until the Secret exists.
		c.mustRun(t, first, "apply", "-f", "-")
	}, "--identity-trust-anchors", filepath.Join(dir, "anchor.crt"), "--identity-external-issuer")
	anchor = fileFingerprint(t, filepath.Join(dir, "anchor.crt"))
	c.meshWithLoad(t, ns, identityRPS)
	c.waitProxies(t, ns, 2*time.Minute, "every proxy holds a certificate from the external issuer", func(pi proxyIdentity) error {
		return only(pi.issuers, firstIssuer)
	})
	return dir, anchor
}

// meshWithLoad deploys the demo (web -> books -> authors) in ns and a
// loadgen Deployment "client" sending rps to web until the namespace
// goes; it returns once the client sends.
func (c *cluster) meshWithLoad(t *testing.T, ns string, rps int) {
	t.Helper()
	c.deployDemo(t, ns, 1)
	c.startLoad(t, loadParams{NS: ns, Name: "client", Target: "web." + ns + ".svc.cluster.local:80", RPS: rps})
	c.rollout(t, ns, "client")
	eventually(t, time.Minute, "the client reports load", func() error {
		r, err := c.loadSoFar(t.Context(), ns)
		if err != nil {
			return err
		}
		if r.OK == 0 {
			return fmt.Errorf("no successful request yet: %+v", r)
		}
		return nil
	})
}

var loadLine = regexp.MustCompile(`msg=load .*\bsent=(\d+) ok=(\d+) failed=(\d+) dropped=(\d+)`)

// loadSoFar is the client's last cumulative summary line (every 10 s).
func (c *cluster) loadSoFar(ctx context.Context, ns string) (loadResult, error) {
	logs, err := c.run(ctx, nil, "-n", ns, "logs", "deployment/client", "-c", "app")
	if err != nil {
		return loadResult{}, err
	}
	var r loadResult
	found := false
	for _, line := range strings.Split(logs, "\n") {
		m := loadLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n := make([]uint64, 4)
		for i := range n {
			n[i], _ = strconv.ParseUint(m[i+1], 10, 64)
		}
		r = loadResult{Sent: n[0], OK: n[1], Failed: n[2], Dropped: n[3]}
		found = true
	}
	if !found {
		return r, errors.New("no load summary line in the client's log yet")
	}
	return r, nil
}

// finalLoad waits for a summary line newer than now and checks that no
// request failed or was dropped since the client started.
func (c *cluster) finalLoad(t *testing.T, ns string) loadResult {
	t.Helper()
	r := c.nextLoad(t, ns)
	t.Logf("client load: sent %d, ok %d, failed %d, dropped %d", r.Sent, r.OK, r.Failed, r.Dropped)
	if r.OK == 0 || r.Failed != 0 || r.Dropped != 0 {
		t.Errorf("client: %d sent, %d ok, %d failed, %d dropped; want none failed or dropped", r.Sent, r.OK, r.Failed, r.Dropped)
		// Now, while the client pod still runs (a suite may restart it
		// before its failure dump): what its proxy said of the failures.
		if logs, err := c.run(t.Context(), nil, "-n", ns, "logs", "deployment/client", "-c", "trellis-proxy"); err == nil {
			t.Logf("the client's proxy, warnings and errors:\n%s", grepLevels(logs, 40))
		}
		c.logProxyErrors(t, ns)
	}
	return r
}

// followLogs follows the logs of every container of the pods that match
// selector in ns now, until stop, which returns them: a rollout deletes
// the pods it replaces, and their logs with them.
func (c *cluster) followLogs(t *testing.T, ns, selector string) (stop func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	argv := append(append([]string{}, c.kubectl...), "--kubeconfig", c.kubeconfig, "-n", ns, "logs", "-f",
		"--all-containers", "--prefix", "--max-log-requests", "20", "-l", selector)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Logf("following the logs of %s: %v", selector, err)
		return func() string { return "" }
	}
	return func() string {
		cancel()
		_ = cmd.Wait()
		return out.String()
	}
}

// grepFailures keeps the last n lines that say something failed: a
// warning, an error, or an answer a proxy made itself.
func grepFailures(logs string, n int) string {
	return grepLines(logs, n, "level=WARN", "level=ERROR", "proxy answered with an error")
}

// failureSeries: the series that say which hop failed a request and why.
var failureSeries = regexp.MustCompile(`^trellis_(request_errors|retries)_total\{|^trellis_responses_total\{.*status_code="[45]`)

// logProxyErrors logs, for every pod of ns still running, its proxy's
// error, retry and 4xx/5xx response series: which hop failed a request.
func (c *cluster) logProxyErrors(t *testing.T, ns string) {
	t.Helper()
	for _, p := range c.pods(t, ns, "") {
		out, err := c.run(t.Context(), nil, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:4191/proxy/metrics", ns, p.Name))
		if err != nil {
			t.Logf("%s: metrics: %v", p.Name, err)
			continue
		}
		var keep []string
		for _, l := range strings.Split(out, "\n") {
			if failureSeries.MatchString(l) {
				keep = append(keep, l)
			}
		}
		t.Logf("%s's proxy, errors, retries and 4xx/5xx responses:\n%s", p.Name, strings.Join(keep, "\n"))
	}
}

// grepLevels keeps the last n lines of logs at level WARN or ERROR.
func grepLevels(logs string, n int) string {
	return grepLines(logs, n, "level=WARN", "level=ERROR")
}

// grepLines keeps the last n lines of logs that contain any of subs.
func grepLines(logs string, n int, subs ...string) string {
	var keep []string
	for _, l := range strings.Split(logs, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				keep = append(keep, l)
				break
			}
		}
	}
	return strings.Join(keep[max(0, len(keep)-n):], "\n")
}

// containerStarts records every container's restart count and start time
// of the pods of ns, to prove no proxy (or app) restarted.
func (c *cluster) containerStarts(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, s := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			started := ""
			if s.State.Running != nil {
				started = s.State.Running.StartedAt.UTC().Format(time.RFC3339)
			} else if s.State.Terminated != nil {
				started = "terminated " + s.State.Terminated.StartedAt.UTC().Format(time.RFC3339)
			}
			out[p.Name+"/"+s.Name] = fmt.Sprintf("restarts=%d started=%s", s.RestartCount, started)
		}
	}
	return out
}

func (c *cluster) assertNoRestart(t *testing.T, ns string, before map[string]string) {
	t.Helper()
	after := c.containerStarts(t, ns)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("container %s: was %s, now %q (restarted or replaced)", k, v, after[k])
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("container %s is new (a pod was replaced)", k)
		}
	}
}

// proxyIdentity is what one proxy reports about its identity.
type proxyIdentity struct {
	bundles, issuers, issuerAnchors []string
}

// identityOf reads the bundle and issuer a proxy reports in its metrics.
func identityOf(m harness.Metrics) proxyIdentity {
	var pi proxyIdentity
	for _, s := range series(m, "trellis_identity_trust_bundle_info") {
		if s.value != 0 {
			pi.bundles = append(pi.bundles, strings.ToLower(s.labels["fingerprint"]))
		}
	}
	for _, s := range series(m, "trellis_identity_cert_issuer_info") {
		if s.value != 0 {
			pi.issuers = append(pi.issuers, strings.ToLower(s.labels["fingerprint"]))
			pi.issuerAnchors = append(pi.issuerAnchors, strings.ToLower(s.labels["anchor_fingerprint"]))
		}
	}
	return pi
}

// proxyIdentities: what each running meshed pod of ns reports, once there
// are at least minPods of them.
func (c *cluster) proxyIdentities(ctx context.Context, t *testing.T, ns string, minPods int) (map[string]proxyIdentity, error) {
	out := map[string]proxyIdentity{}
	for _, p := range c.pods(t, ns, "trellis.io/proxied=true") {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		m, err := c.metrics(ctx, ns, p.Name, 4191)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Name, err)
		}
		out[p.Name] = identityOf(m)
	}
	if len(out) < minPods {
		return nil, fmt.Errorf("only %d running meshed pods in %s, want %d", len(out), ns, minPods)
	}
	return out, nil
}

// waitProxies polls every proxy of ns (the identity suites' four) until
// want accepts each, and returns how long it took.
func (c *cluster) waitProxies(t *testing.T, ns string, timeout time.Duration, what string, want func(proxyIdentity) error) time.Duration {
	t.Helper()
	return c.waitProxiesOf(t, ns, 4, timeout, what, want)
}

// waitProxiesOf is waitProxies for at least minPods meshed pods.
func (c *cluster) waitProxiesOf(t *testing.T, ns string, minPods int, timeout time.Duration, what string, want func(proxyIdentity) error) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, what, func() error {
		ids, err := c.proxyIdentities(t.Context(), t, ns, minPods)
		if err != nil {
			return err
		}
		var errs []error
		for pod, pi := range ids {
			if err := want(pi); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", pod, err))
			}
		}
		return errors.Join(errs...)
	})
	d := time.Since(start)
	t.Logf("%s: %s", what, d.Round(time.Second))
	return d
}

func only(got []string, want string) error {
	if len(got) != 1 || got[0] != want {
		return fmt.Errorf("reports %v, want only %s", got, shortFP(want))
	}
	return nil
}

func shortFP(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return fp
}

// controllerReloads is the controller's count of installed issuer
// reloads, read through the API server's pod proxy.
func (c *cluster) controllerReloads(ctx context.Context, t *testing.T) (float64, error) {
	m, err := c.metrics(ctx, "trellis-system", c.controllerPod(t), 9996)
	if err != nil {
		return 0, err
	}
	return m.Value("trellis_controller_issuer_reload_total", map[string]string{"result": "ok"}), nil
}

// waitControllerReload measures how long the kubelet takes to refresh the
// controller's mounted issuer Secret after a change (the controller counts
// the reload).
func (c *cluster) waitControllerReload(t *testing.T, before float64, changed time.Time) time.Duration {
	t.Helper()
	eventually(t, 3*time.Minute, "the controller reloads the changed issuer Secret", func() error {
		n, err := c.controllerReloads(t.Context(), t)
		if err != nil {
			return err
		}
		if n <= before {
			return fmt.Errorf("trellis_controller_issuer_reload_total{result=ok} still %g", n)
		}
		return nil
	})
	d := time.Since(changed)
	t.Logf("Secret change -> controller reload (kubelet volume refresh): %s", d.Round(time.Second))
	return d
}

// secretJSON is the issuer Secret as the cluster holds it.
func (c *cluster) secretCerts(t *testing.T, key string) []string {
	t.Helper()
	var s corev1.Secret
	if err := json.Unmarshal([]byte(c.mustRun(t, nil, "-n", "trellis-system", "get", "secret", "trellis-identity-issuer", "-o", "json")), &s); err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(s.Data[key])
	if err != nil {
		t.Fatalf("Secret %s: %v", key, err)
	}
	var fps []string
	for _, c := range certs {
		fps = append(fps, pki.CertFingerprint(c))
	}
	return fps
}

// restartProxyAfterRotation kills the proxy container of app's pod, created
// before the rotation, with SIGKILL through the node's containerd (what an
// OOM kill does; the admin /shutdown only answers loopback callers) and
// checks the kubelet's restart: the container is ready again, started from
// its trust anchors cache (the pod's bootstrap annotation still holds
// only the old anchor, oldBundle), reports bundle and a certificate from
// issuer chaining to anchor, and carries mTLS traffic again. Requests
// sent while web has no proxy fail (its inbound port and its app's
// outbound redirection both lead to the proxy): they are counted and
// reported, and none may fail once traffic flows again.
func (c *cluster) restartProxyAfterRotation(t *testing.T, ns, app string, rotationStart time.Time, oldBundle, bundle, issuer, anchor string) {
	t.Helper()
	proxyStatus := func(p corev1.Pod) (corev1.ContainerStatus, bool) {
		for _, s := range p.Status.InitContainerStatuses {
			if s.Name == "trellis-proxy" {
				return s, true
			}
		}
		return corev1.ContainerStatus{}, false
	}
	var pod corev1.Pod
	for _, p := range c.pods(t, ns, "app="+app) {
		if p.DeletionTimestamp == nil {
			pod = p
		}
	}
	if pod.Name == "" {
		t.Fatalf("no %s pod in %s", app, ns)
	}
	if !pod.CreationTimestamp.Time.Before(rotationStart) {
		t.Fatalf("pod %s was created at %s, after the rotation started (%s)", pod.Name, pod.CreationTimestamp.UTC(), rotationStart.UTC())
	}
	if err := proxyState(pod); err != nil {
		t.Fatalf("pod %s: %v", pod.Name, err)
	}
	// What the proxy would start from without its cache.
	boot, err := pki.ParseCertsPEM([]byte(pod.Annotations["trellis.io/trust-anchors"]))
	if err != nil || pki.Fingerprint(boot) != oldBundle {
		t.Fatalf("pod %s: bootstrap anchors annotation: %v; want the old bundle %s", pod.Name, err, shortFP(oldBundle))
	}
	before, ok := proxyStatus(pod)
	if !ok || !before.Ready || !strings.HasPrefix(before.ContainerID, "containerd://") {
		t.Fatalf("pod %s: trellis-proxy status %+v", pod.Name, before)
	}
	load0, err := c.loadSoFar(t.Context(), ns)
	if err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(c.dir, "run", "containerd", "containerd.sock")
	id := strings.TrimPrefix(before.ContainerID, "containerd://")
	if out, err := c.exec(t.Context(), nil, "ctr", "--address", sock, "-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id); err != nil {
		t.Fatalf("killing the proxy container of %s: %v\n%s", pod.Name, err, out)
	}
	killed := time.Now()
	var after corev1.ContainerStatus
	eventually(t, 2*time.Minute, "trellis-proxy of "+pod.Name+" restarted and ready", func() error {
		pods := c.pods(t, ns, "app="+app)
		for _, p := range pods {
			if p.Name != pod.Name {
				continue
			}
			s, ok := proxyStatus(p)
			if !ok || s.RestartCount <= before.RestartCount || !s.Ready || s.State.Running == nil {
				return fmt.Errorf("restarts %d (was %d), ready %v, state %+v", s.RestartCount, before.RestartCount, s.Ready, s.State)
			}
			after = s
			return nil
		}
		return fmt.Errorf("pod %s is gone (pods: %d)", pod.Name, len(pods))
	})
	last := "unknown"
	if term := after.LastTerminationState.Terminated; term != nil {
		last = fmt.Sprintf("exit code %d (%s)", term.ExitCode, term.Reason)
	}
	t.Logf("proxy container of %s killed (%s) -> restarted (restarts %d -> %d) and ready: %s", pod.Name, last,
		before.RestartCount, after.RestartCount, time.Since(killed).Round(100*time.Millisecond))

	m, err := c.metrics(t.Context(), ns, pod.Name, 4191)
	if err != nil {
		t.Fatal(err)
	}
	var errs []error
	pi := identityOf(m)
	errs = append(errs, only(pi.bundles, bundle), only(pi.issuers, issuer), only(pi.issuerAnchors, anchor))
	for _, op := range []string{"read", "write"} {
		if v := m.Value("trellis_identity_trust_anchors_cache_errors_total", map[string]string{"op": op}); v != 0 {
			errs = append(errs, fmt.Errorf("%g cache %s errors", v, op))
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Errorf("restarted proxy of %s: %v", pod.Name, err)
	}
	logs := c.mustRun(t, nil, "-n", ns, "logs", pod.Name, "-c", "trellis-proxy")
	if !logHas(logs, `msg="trust anchors from the cache"`, "file=/var/run/trellis/state/trust-anchors.pem", "fingerprint="+bundle) {
		t.Errorf("the restarted proxy does not log that it started from its cache:\n%s", logs)
	}
	prev := c.mustRun(t, nil, "-n", ns, "logs", pod.Name, "-c", "trellis-proxy", "--previous")
	if !logHas(prev, `msg="trust anchors cached"`, "fingerprint="+bundle) {
		t.Errorf("the killed proxy never logged caching the rotated bundle %s:\n%s", shortFP(bundle), prev)
	}

	// Traffic through the restarted proxy: counted by the new process
	// only, over mTLS.
	eventually(t, time.Minute, "mTLS requests through the restarted proxy", func() error {
		m, err := c.metrics(t.Context(), ns, pod.Name, 4191)
		if err != nil {
			return err
		}
		in, _ := m.Sum("trellis_requests_total", map[string]string{"direction": "inbound", "tls": "true"})
		out, _ := m.Sum("trellis_requests_total", map[string]string{"direction": "outbound", "tls": "true"})
		if in == 0 || out == 0 {
			return fmt.Errorf("inbound %g, outbound %g mTLS requests", in, out)
		}
		return nil
	})
	flowing := time.Now()
	load1 := c.nextLoad(t, ns)
	load2 := c.nextLoad(t, ns)
	lost := func(r loadResult) uint64 { return r.Failed + r.Dropped }
	t.Logf("requests failed or dropped from the summary before the kill to the first after traffic flowed again (+%s): %d of %d sent (%.1f s of load at %d/s); in the next summary: %d of %d",
		flowing.Sub(killed).Round(100*time.Millisecond), lost(load1)-lost(load0), load1.Sent-load0.Sent,
		float64(lost(load1)-lost(load0))/identityRPS, identityRPS, lost(load2)-lost(load1), load2.Sent-load1.Sent)
	if load2.OK <= load1.OK || lost(load2) != lost(load1) {
		t.Errorf("after the restarted proxy carried traffic again: %+v then %+v; want more ok and no new failure", load1, load2)
	}
}

// nextLoad waits for the client's next summary line (every 10 s) and
// returns it.
func (c *cluster) nextLoad(t *testing.T, ns string) loadResult {
	t.Helper()
	before, err := c.loadSoFar(t.Context(), ns)
	if err != nil {
		t.Fatal(err)
	}
	var r loadResult
	eventually(t, 30*time.Second, "a new load summary line", func() error {
		if r, err = c.loadSoFar(t.Context(), ns); err != nil {
			return err
		}
		if r.Sent == before.Sent {
			return errors.New("no new summary line yet")
		}
		return nil
	})
	return r
}

// logHas reports whether one line of logs holds every part.
func logHas(logs string, parts ...string) bool {
	for _, line := range strings.Split(logs, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// rotateStage runs trellis identity rotate --kubernetes --stage stage.
func (c *cluster) rotateStage(t *testing.T, anchorDir, stage string) (string, error) {
	t.Helper()
	return c.trellis(t.Context(), nil, "identity", "rotate", "--kubernetes", "--anchor-dir", anchorDir, "--stage", stage)
}

// stageWhenReady runs a stage until the CLI's proxy check stops refusing
// it; any other refusal fails the test.
func (c *cluster) stageWhenReady(t *testing.T, anchorDir, name string, timeout time.Duration) {
	t.Helper()
	start := time.Now()
	refusals := 0
	var last error
	eventually(t, timeout, "rotate --stage "+name, func() error {
		out, err := c.rotateStage(t, anchorDir, name)
		if err != nil {
			if !strings.Contains(err.Error(), "not ready") {
				t.Fatalf("rotate --stage %s failed for another reason than proxies not ready: %v\n%s", name, err, out)
			}
			refusals++
			last = err
			return err
		}
		t.Logf("rotate --stage %s:\n%s", name, out)
		return nil
	})
	t.Logf("stage %s went through after %s (%d refusals while proxies caught up)", name, time.Since(start).Round(time.Second), refusals)
	if refusals > 0 {
		t.Logf("last refusal: %v", last)
	}
}
