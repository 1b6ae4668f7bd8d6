package k8se2e

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The identity suites: issuer and anchor rotations on the cluster under
// steady load (client -> web -> books -> authors, every hop meshed), with
// 60 s workload certificates so every proxy renews during the suite. Each
// asserts the client counted no failed or dropped request and that no
// container restarted. See docs/identity.md.

const identityRPS = 20

// TestIdentityIssuer is the suite "identity-issuer": a new issuer signed
// by the same anchor, written over the issuer Secret with
// `trellis identity create-issuer -o secret | kubectl apply`, is picked up
// by the running controller and reaches every proxy on its next renewal.
func TestIdentityIssuer(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-id-issuer"
	dir := t.TempDir()
	c.createCA(t, dir, "87600h")
	c.installIdentity(t, nil, "--identity-trust-anchors", filepath.Join(dir, "anchor.crt"),
		"--identity-issuer-cert", filepath.Join(dir, "issuer.crt"), "--identity-issuer-key", filepath.Join(dir, "issuer.key"))
	oldIssuer := fileFingerprint(t, filepath.Join(dir, "issuer.crt"))
	anchor := fileFingerprint(t, filepath.Join(dir, "anchor.crt"))
	c.meshWithLoad(t, ns, identityRPS)
	c.waitProxies(t, ns, 2*time.Minute, "every proxy holds a certificate from the installed issuer", func(pi proxyIdentity) error {
		return only(pi.issuers, oldIssuer)
	})
	starts := c.containerStarts(t, ns)

	reloads, err := c.controllerReloads(t.Context(), t)
	if err != nil {
		t.Fatal(err)
	}
	secret, newIssuer := c.issuerSecret(t, dir, "trellis-issuer-2")
	c.mustRun(t, secret, "apply", "-f", "-")
	changed := time.Now()
	c.waitControllerReload(t, reloads, changed)
	c.waitProxies(t, ns, 3*time.Minute, "every proxy renewed from the new issuer", func(pi proxyIdentity) error {
		if err := only(pi.issuers, newIssuer); err != nil {
			return err
		}
		return only(pi.issuerAnchors, anchor)
	})
	t.Logf("Secret change -> every proxy on the new issuer: %s", time.Since(changed).Round(time.Second))
	// One more renewal period on the new issuer only.
	time.Sleep(testCertLifetime * 7 / 10)
	c.finalLoad(t, ns)
	c.assertNoRestart(t, ns, starts)
}

// TestIdentityExternal is the suite "identity-external": installed with
// --identity-external-issuer, the issuer Secret is created and later
// replaced from outside Trellis (unlabelled, as cert-manager writes it);
// rotate --kubernetes --status says an external CA owns it.
func TestIdentityExternal(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-id-external"
	dir, anchor := c.meshExternalIssuer(t, ns)
	if labels := c.mustRun(t, nil, "-n", "trellis-system", "get", "secret", "trellis-identity-issuer", "-o", "jsonpath={.metadata.labels}"); strings.Contains(labels, "trellis") {
		t.Fatalf("the external issuer Secret carries Trellis labels: %s", labels)
	}
	starts := c.containerStarts(t, ns)

	out, err := c.trellis(t.Context(), nil, "identity", "rotate", "--kubernetes", "--status")
	if err != nil || !strings.Contains(out, "external CA") {
		t.Errorf("rotate --kubernetes --status on an external issuer Secret: want it to name the external CA, got %v\n%s", err, out)
	}

	reloads, err := c.controllerReloads(t.Context(), t)
	if err != nil {
		t.Fatal(err)
	}
	second, secondIssuer := c.issuerSecret(t, dir, "external-issuer-2")
	c.mustRun(t, second, "apply", "-f", "-")
	changed := time.Now()
	c.waitControllerReload(t, reloads, changed)
	c.waitProxies(t, ns, 3*time.Minute, "every proxy renewed from the replaced external issuer", func(pi proxyIdentity) error {
		if err := only(pi.issuers, secondIssuer); err != nil {
			return err
		}
		return only(pi.issuerAnchors, anchor)
	})
	t.Logf("Secret change -> every proxy on the new issuer: %s", time.Since(changed).Round(time.Second))
	c.finalLoad(t, ns)
	c.assertNoRestart(t, ns, starts)
}

// TestIdentityAnchor is the suite "identity-anchor": the three stages of
// trellis identity rotate --kubernetes under load. Each stage is retried
// until the CLI's own proxy check lets it through; remove-old is first
// refused while proxies still hold certificates from the old anchor.
func TestIdentityAnchor(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-id-anchor"
	dir := t.TempDir()
	c.createCA(t, dir, "87600h")
	c.installIdentity(t, nil, "--identity-trust-anchors", filepath.Join(dir, "anchor.crt"),
		"--identity-issuer-cert", filepath.Join(dir, "issuer.crt"), "--identity-issuer-key", filepath.Join(dir, "issuer.key"))
	c.meshWithLoad(t, ns, identityRPS)
	starts := c.containerStarts(t, ns)
	oldBundle := bundleFingerprint(t, filepath.Join(dir, "anchor.crt"))
	rotationStart := time.Now()
	anchorDir := filepath.Join(t.TempDir(), "anchor")
	rotate := func(stage string) (string, error) { return c.rotateStage(t, anchorDir, stage) }
	stage := func(name string, timeout time.Duration) { c.stageWhenReady(t, anchorDir, name, timeout) }

	// Out of order: refused.
	if out, err := rotate("remove-old"); err != nil || !strings.Contains(out, "already done") {
		t.Errorf("remove-old before any rotation: want 'already done', got %v\n%s", err, out)
	}
	if out, err := rotate("switch-issuer"); err == nil || !strings.Contains(err.Error(), "add-anchor first") {
		t.Errorf("switch-issuer before add-anchor: want a refusal, got %v\n%s", err, out)
	}

	reloads, err := c.controllerReloads(t.Context(), t)
	if err != nil {
		t.Fatal(err)
	}
	stage("add-anchor", time.Minute)
	changed := time.Now()
	if out, err := rotate("add-anchor"); err != nil || !strings.Contains(out, "already done") {
		t.Errorf("add-anchor again: want 'already done', got %v\n%s", err, out)
	}
	if fps := c.secretCerts(t, "ca.crt"); len(fps) != 2 {
		t.Fatalf("after add-anchor the Secret's ca.crt holds %d anchors, want 2", len(fps))
	}
	c.waitControllerReload(t, reloads, changed)
	stage("switch-issuer", 4*time.Minute)
	t.Logf("add-anchor -> switch-issuer allowed: %s", time.Since(changed).Round(time.Second))
	newAnchor := fileFingerprint(t, filepath.Join(anchorDir, "anchor.crt"))
	switched := time.Now()

	// Right after the switch every proxy still holds a certificate from
	// the old anchor (the controller has not even reloaded yet).
	out, err := rotate("remove-old")
	if err == nil || !strings.Contains(err.Error(), "still holds a certificate from issuer") {
		t.Fatalf("remove-old right after switch-issuer: want a refusal naming proxies on the old issuer, got %v\n%s", err, out)
	}
	t.Logf("remove-old refused as expected:\n%v", err)
	stage("remove-old", 5*time.Minute)
	t.Logf("switch-issuer -> remove-old allowed: %s", time.Since(switched).Round(time.Second))
	removed := time.Now()
	final := bundleFingerprint(t, filepath.Join(anchorDir, "anchor.crt"))
	c.waitProxies(t, ns, 4*time.Minute, "every proxy trusts only the new anchor", func(pi proxyIdentity) error {
		return errors.Join(only(pi.bundles, final), only(pi.issuerAnchors, newAnchor))
	})
	t.Logf("remove-old -> every proxy on the new anchor only: %s", time.Since(removed).Round(time.Second))
	if fps := c.secretCerts(t, "ca.crt"); len(fps) != 1 || fps[0] != newAnchor {
		t.Errorf("after remove-old the Secret's ca.crt is %v, want only %s", fps, shortFP(newAnchor))
	}
	cm := c.mustRun(t, nil, "-n", "trellis-system", "get", "configmap", "trellis-trust-anchors", "-o", "jsonpath={.data.ca-bundle\\.crt}")
	if n := strings.Count(cm, "BEGIN CERTIFICATE"); n != 1 {
		t.Errorf("after remove-old the ConfigMap holds %d anchors, want 1", n)
	}
	c.finalLoad(t, ns)
	c.assertNoRestart(t, ns, starts)
	if r := c.check(t); !r.Success {
		t.Errorf("trellis check after the rotation: %+v", r.Summary)
	}

	// Now that nothing restarted during the rotation: web's proxy
	// container crashes and the kubelet restarts it. Its bootstrap anchors
	// (the pod's annotation) hold only the old anchor; it must come back
	// from its trust anchors cache.
	c.restartProxyAfterRotation(t, ns, "web", rotationStart, oldBundle, final, c.secretCerts(t, "tls.crt")[0], newAnchor)
}

// TestIdentityExternalAnchor is the suite "identity-external-anchor": an
// anchor rotation with an external issuer Secret (unlabelled, as
// cert-manager writes it, its ca.crt only the issuer's own CA) under load.
// rotate --kubernetes add-anchor and remove-old change only the ConfigMap
// trellis-trust-anchors, which the controller serves (--trust-anchors-file);
// switch-issuer is refused with what to do, and the "external CA" (the
// test) switches the issuer to one signed by the new anchor.
func TestIdentityExternalAnchor(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-id-ext-anchor"
	_, oldAnchor := c.meshExternalIssuer(t, ns)
	starts := c.containerStarts(t, ns)
	anchorDir := filepath.Join(t.TempDir(), "anchor")
	secretVersion := func() string {
		return c.mustRun(t, nil, "-n", "trellis-system", "get", "secret", "trellis-identity-issuer", "-o", "jsonpath={.metadata.resourceVersion}")
	}
	cmAnchors := func() int {
		cm := c.mustRun(t, nil, "-n", "trellis-system", "get", "configmap", "trellis-trust-anchors", "-o", "jsonpath={.data.ca-bundle\\.crt}")
		return strings.Count(cm, "BEGIN CERTIFICATE")
	}

	if out, err := c.rotateStage(t, anchorDir, "switch-issuer"); err == nil || !strings.Contains(err.Error(), "add-anchor first") {
		t.Errorf("switch-issuer before add-anchor: want a refusal, got %v\n%s", err, out)
	}
	version := secretVersion()
	reloads, err := c.controllerReloads(t.Context(), t)
	if err != nil {
		t.Fatal(err)
	}
	c.stageWhenReady(t, anchorDir, "add-anchor", time.Minute)
	added := time.Now()
	if n := cmAnchors(); n != 2 {
		t.Fatalf("after add-anchor the ConfigMap holds %d anchors, want 2", n)
	}
	if fps := c.secretCerts(t, "ca.crt"); len(fps) != 1 || fps[0] != oldAnchor || secretVersion() != version {
		t.Fatalf("add-anchor wrote the external Secret (ca.crt now %v)", fps)
	}
	c.waitControllerReload(t, reloads, added)
	newAnchor := fileFingerprint(t, filepath.Join(anchorDir, "anchor.next.crt"))

	// switch-issuer is always refused; it says when the external CA may
	// switch (every proxy trusts the new anchor).
	start := time.Now()
	eventually(t, 4*time.Minute, "switch-issuer says the external CA may switch", func() error {
		out, err := c.rotateStage(t, anchorDir, "switch-issuer")
		if err == nil || !strings.Contains(err.Error(), "external CA") {
			t.Fatalf("switch-issuer with an external Secret: want a refusal naming the external CA, got %v\n%s", err, out)
		}
		if !strings.Contains(err.Error(), "may switch now") {
			return err
		}
		t.Logf("switch-issuer refused as expected:\n%v", err)
		return nil
	})
	t.Logf("add-anchor -> proxies ready for the switch: %s", time.Since(start).Round(time.Second))
	if secretVersion() != version {
		t.Fatal("switch-issuer wrote the external Secret")
	}

	// The external CA switches: an issuer of the new anchor, ca.crt the
	// new anchor alone.
	reloads, err = c.controllerReloads(t.Context(), t)
	if err != nil {
		t.Fatal(err)
	}
	second, secondIssuer := c.issuerSecretFrom(t, filepath.Join(anchorDir, "anchor.next.crt"), filepath.Join(anchorDir, "anchor.next.key"), "external-issuer-2")
	c.mustRun(t, second, "apply", "-f", "-")
	switched := time.Now()
	if labels := c.mustRun(t, nil, "-n", "trellis-system", "get", "secret", "trellis-identity-issuer", "-o", "jsonpath={.metadata.labels}"); strings.Contains(labels, "trellis") {
		t.Fatalf("the external issuer Secret carries Trellis labels: %s", labels)
	}
	out, err := c.rotateStage(t, anchorDir, "remove-old")
	if err == nil || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("remove-old right after the external switch: want a refusal naming proxies not ready, got %v\n%s", err, out)
	}
	t.Logf("remove-old refused as expected:\n%v", err)
	c.waitControllerReload(t, reloads, switched)
	c.stageWhenReady(t, anchorDir, "remove-old", 5*time.Minute)
	t.Logf("external switch -> remove-old allowed: %s", time.Since(switched).Round(time.Second))
	removed := time.Now()
	final := bundleFingerprint(t, filepath.Join(anchorDir, "anchor.crt"))
	c.waitProxies(t, ns, 4*time.Minute, "every proxy trusts only the new anchor", func(pi proxyIdentity) error {
		return errors.Join(only(pi.bundles, final), only(pi.issuers, secondIssuer), only(pi.issuerAnchors, newAnchor))
	})
	t.Logf("remove-old -> every proxy on the new anchor only: %s", time.Since(removed).Round(time.Second))
	if n := cmAnchors(); n != 1 {
		t.Errorf("after remove-old the ConfigMap holds %d anchors, want 1", n)
	}
	if fps := c.secretCerts(t, "ca.crt"); len(fps) != 1 || fps[0] != newAnchor {
		t.Errorf("after remove-old the Secret's ca.crt is %v, want only %s (as the external CA wrote it)", fps, shortFP(newAnchor))
	}
	c.finalLoad(t, ns)
	c.assertNoRestart(t, ns, starts)
	if r := c.check(t); !r.Success {
		t.Errorf("trellis check after the rotation: %+v", r.Summary)
	}
}

// TestIdentityCheck is the suite "identity-check": trellis check warns
// about an issuer with less than 7 days and an anchor with less than 30
// days left, and is otherwise green (the demo meshed); with long
// validities it does not warn.
func TestIdentityCheck(t *testing.T) {
	c := newCluster(t)
	cases := []struct {
		name  string
		flags []string
		warn  []string // identity checks that must warn
	}{
		{"short", []string{"--identity-issuer-validity", "72h", "--identity-anchor-validity", "480h"}, []string{"issuer", "anchor"}},
		{"long", nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.installIdentity(t, nil, tc.flags...)
			// A meshed workload, so the data-plane checks have something
			// to look at and the report can be green apart from identity.
			c.deployDemo(t, "e2e-id-check", 1)
			r := c.check(t)
			var warned []string
			for _, ch := range r.Checks {
				switch ch.Status {
				case "fail":
					t.Errorf("check %s/%s failed: %s", ch.Group, ch.Name, ch.Message)
				case "warn":
					warned = append(warned, ch.Group+"/"+ch.Name+": "+ch.Message)
				}
			}
			for _, w := range tc.warn {
				found := false
				for _, got := range warned {
					found = found || strings.Contains(strings.ToLower(got), w)
				}
				if !found {
					t.Errorf("no warning about the %s; warnings: %v", w, warned)
				}
			}
			if len(warned) != len(tc.warn) {
				t.Errorf("warnings %v, want exactly %d (%v)", warned, len(tc.warn), tc.warn)
			}
		})
	}
}
