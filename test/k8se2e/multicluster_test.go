package k8se2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The multicluster suites run on two clusters: cluster a (KUBECONFIG) and
// a peer (TRELLIS_E2E_PEER_KUBECONFIG), which `make e2e-mc` brings up
// beside it (test/cluster, TRELLIS_CLUSTER=b).

// peerCluster is the second cluster, with the same binaries and images;
// the suite is skipped without one.
func (c *cluster) peerCluster(t *testing.T) *cluster {
	t.Helper()
	kc := os.Getenv("TRELLIS_E2E_PEER_KUBECONFIG")
	if kc == "" {
		t.Skip("set TRELLIS_E2E_PEER_KUBECONFIG to a second cluster's kubeconfig (make e2e-mc brings one up)")
	}
	p := *c
	p.kubeconfig = kc
	if _, err := p.run(t.Context(), nil, "get", "--raw", "/readyz"); err != nil {
		t.Fatalf("peer cluster not ready: %v (make cluster-up TRELLIS_CLUSTER=b)", err)
	}
	return &p
}

// TestMulticlusterTrust is the suite "mc-trust" (issue 16, item 2): one
// trust anchor made with `trellis identity create-anchor`, an issuer per
// cluster for its own trust domain (`create-issuer --trust-domain
// cluster-a.local`, `cluster-b.local`), and `trellis install` on each
// with them and the other's trust domain accepted
// (--identity-accept-trust-domains), as docs/multicluster.md says. Each
// cluster's proxies then carry the other's domain
// (TRELLIS_PROXY_ACCEPT_TRUST_DOMAINS). A meshed pod in each cluster
// then holds a certificate from its own cluster's issuer that chains to
// the shared anchor, and `trellis check --multicluster` passes from each
// side, every check ok.
func TestMulticlusterTrust(t *testing.T) {
	a := newCluster(t)
	b := a.peerCluster(t)
	dir := t.TempDir()
	a.mustTrellis(t, nil, "identity", "create-anchor", "--out-dir", dir)
	anchor := fileFingerprint(t, filepath.Join(dir, "anchor.crt"))
	const ns = "e2e-mc-trust"
	clusters := []struct {
		name string
		c    *cluster
	}{{"a", a}, {"b", b}}
	for _, x := range clusters {
		td := "cluster-" + x.name + ".local"
		other := "cluster-" + map[string]string{"a": "b", "b": "a"}[x.name] + ".local"
		issuerDir := filepath.Join(dir, x.name)
		a.mustTrellis(t, nil, "identity", "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"),
			"--anchor-key", filepath.Join(dir, "anchor.key"), "--trust-domain", td, "--common-name", "issuer-"+x.name, "--out-dir", issuerDir)
		start := time.Now()
		x.c.installIdentity(t, nil, "--identity-trust-anchors", filepath.Join(dir, "anchor.crt"),
			"--identity-issuer-cert", filepath.Join(issuerDir, "issuer.crt"), "--identity-issuer-key", filepath.Join(issuerDir, "issuer.key"),
			"--set", "identity.trustDomain="+td, "--identity-accept-trust-domains", other)
		t.Logf("cluster %s: installed with issuer-%s for %s in %s", x.name, x.name, td, time.Since(start).Round(time.Second))
	}
	for _, x := range clusters {
		x.c.namespaces(t, ns)
		x.c.waitInjector(t)
		x.c.applyService(t, ns, nil)
		x.c.applyGroup(t, ns, echoGroup{Name: "mc", Replicas: 1})
	}
	for _, x := range clusters {
		issuer := fileFingerprint(t, filepath.Join(dir, x.name, "issuer.crt"))
		start := time.Now()
		eventually(t, 2*time.Minute, "cluster "+x.name+"'s proxy holds a certificate of issuer-"+x.name+" under the shared anchor", func() error {
			return x.c.proxiesCertifiedBy(t.Context(), t, ns, issuer, anchor)
		})
		t.Logf("cluster %s: its proxy certified by issuer-%s, chaining to the shared anchor, after %s", x.name, x.name, time.Since(start).Round(time.Second))
	}
	for _, dir := range []struct{ from, to *cluster }{{a, b}, {b, a}} {
		r := dir.from.check(t, "--multicluster", "--peer-kubeconfig", dir.to.kubeconfig)
		if !r.Success {
			t.Errorf("trellis check --multicluster from %s: not successful", dir.from.kubeconfig)
		}
		for _, ch := range r.Checks {
			if ch.Status != "ok" {
				t.Errorf("check %q: %s: %s", ch.Name, ch.Status, ch.Message)
			}
		}
		if len(r.Checks) != 4 {
			t.Errorf("trellis check --multicluster ran %d checks, want the 4 multicluster ones", len(r.Checks))
		}
	}
}

// proxiesCertifiedBy: every meshed pod of ns reports a valid certificate
// signed by issuer (fingerprint) whose chain ends at anchor.
func (c *cluster) proxiesCertifiedBy(ctx context.Context, t *testing.T, ns, issuer, anchor string) error {
	pods := c.pods(t, ns, "trellis.io/proxied=true")
	if len(pods) == 0 {
		return errors.New("no meshed pod yet")
	}
	var problems []string
	for _, p := range pods {
		m, err := c.metrics(ctx, ns, p.Name, 4191)
		if err != nil {
			return fmt.Errorf("pod %s: %w", p.Name, err)
		}
		pi := identityOf(m)
		if len(pi.issuers) != 1 || pi.issuers[0] != issuer || pi.issuerAnchors[0] != anchor {
			problems = append(problems, fmt.Sprintf("pod %s: issuers %v (anchors %v), want %s under %s", p.Name, pi.issuers, pi.issuerAnchors, shortFP(issuer), shortFP(anchor)))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}
