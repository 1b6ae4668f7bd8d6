package k8se2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/pki"
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
	before, err := c.loadSoFar(t.Context(), ns)
	if err != nil {
		t.Fatal(err)
	}
	var r loadResult
	eventually(t, 30*time.Second, "a new load summary line", func() error {
		r, err = c.loadSoFar(t.Context(), ns)
		if err != nil {
			return err
		}
		if r.Sent == before.Sent {
			return errors.New("no new summary line yet")
		}
		return nil
	})
	t.Logf("client load: sent %d, ok %d, failed %d, dropped %d", r.Sent, r.OK, r.Failed, r.Dropped)
	if r.OK == 0 || r.Failed != 0 || r.Dropped != 0 {
		t.Errorf("client: %d sent, %d ok, %d failed, %d dropped; want none failed or dropped", r.Sent, r.OK, r.Failed, r.Dropped)
	}
	return r
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

func (c *cluster) proxyIdentities(ctx context.Context, t *testing.T, ns string) (map[string]proxyIdentity, error) {
	out := map[string]proxyIdentity{}
	for _, p := range c.pods(t, ns, "trellis.io/proxied=true") {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		m, err := c.metrics(ctx, ns, p.Name, 4191)
		if err != nil {
			return nil, fmt.Errorf("pod %s: %w", p.Name, err)
		}
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
		out[p.Name] = pi
	}
	if len(out) < 4 {
		return nil, fmt.Errorf("only %d running meshed pods in %s, want 4", len(out), ns)
	}
	return out, nil
}

// waitProxies polls every proxy of ns until want accepts each, and
// returns how long it took.
func (c *cluster) waitProxies(t *testing.T, ns string, timeout time.Duration, what string, want func(proxyIdentity) error) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, timeout, what, func() error {
		ids, err := c.proxyIdentities(t.Context(), t, ns)
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
