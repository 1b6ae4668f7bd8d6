package k8se2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
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
	suiteTimer(t, "mc-trust")
	dir, anchor := mcInstall(t, a, b)
	const ns = "e2e-mc-trust"
	clusters := []struct {
		name string
		c    *cluster
	}{{"a", a}, {"b", b}}
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

// mcInstall makes one trust anchor with `trellis identity create-anchor`
// and an issuer per cluster for its own trust domain (`create-issuer
// --trust-domain cluster-a.local`, `cluster-b.local`), and installs each
// cluster with them and the other's trust domain accepted
// (--identity-accept-trust-domains), as docs/multicluster.md says; a
// gets flagsA too. It returns the directory of the certificates and the
// anchor's fingerprint.
func mcInstall(t *testing.T, a, b *cluster, flagsA ...string) (dir, anchor string) {
	t.Helper()
	dir = t.TempDir()
	a.mustTrellis(t, nil, "identity", "create-anchor", "--out-dir", dir)
	anchor = fileFingerprint(t, filepath.Join(dir, "anchor.crt"))
	for _, x := range []struct {
		name, other string
		c           *cluster
		flags       []string
	}{{"a", "b", a, flagsA}, {"b", "a", b, nil}} {
		td := "cluster-" + x.name + ".local"
		issuerDir := filepath.Join(dir, x.name)
		a.mustTrellis(t, nil, "identity", "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"),
			"--anchor-key", filepath.Join(dir, "anchor.key"), "--trust-domain", td, "--common-name", "issuer-"+x.name, "--out-dir", issuerDir)
		start := time.Now()
		flags := append([]string{"--identity-trust-anchors", filepath.Join(dir, "anchor.crt"),
			"--identity-issuer-cert", filepath.Join(issuerDir, "issuer.crt"), "--identity-issuer-key", filepath.Join(issuerDir, "issuer.key"),
			"--set", "identity.trustDomain=" + td, "--identity-accept-trust-domains", "cluster-" + x.other + ".local"}, x.flags...)
		x.c.installIdentity(t, nil, flags...)
		t.Logf("cluster %s: installed with issuer-%s for %s in %s", x.name, x.name, td, time.Since(start).Round(time.Second))
	}
	return dir, anchor
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

// TestMulticlusterFlat is the suite "mc-flat" (issue 16, items 3 and 5):
// the two clusters of mc-trust, a installed with --multicluster, linked
// as docs/multicluster.md says (`trellis multicluster allow` applied in
// b, `trellis multicluster link` run against b and applied in a). b's
// echo Service, labelled trellis.io/export=true, appears in a as echo-b
// with b's pod IPs; a's loadgen calls echo-b by name under load and
// every request succeeds. b's server proxies saw a's loadgen identity
// (spiffe://cluster-a.local/...), and a capture on the link between the
// clusters (b's veth) holds the calls' TLS and no plaintext HTTP.
// Unexporting removes the mirror.
func TestMulticlusterFlat(t *testing.T) {
	a := newCluster(t)
	b := a.peerCluster(t)
	suiteTimer(t, "mc-flat")
	mcInstall(t, a, b, "--multicluster")
	const ns = "e2e-mc-flat"
	a.namespaces(t, ns)
	b.namespaces(t, ns)
	a.waitInjector(t)
	b.waitInjector(t)
	b.applyService(t, ns, nil)
	b.applyGroup(t, ns, echoGroup{Name: "mc", Replicas: 2})
	a.mustRun(t, []byte(fmt.Sprintf(`
apiVersion: v1
kind: Namespace
metadata: {name: %[1]s, annotations: {trellis.io/inject: enabled}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: loadgen, namespace: %[1]s}
`, ns)), "apply", "-f", "-")

	start := time.Now()
	allow := a.mustTrellis(t, nil, "multicluster", "allow", "--linked-cluster-name", "a")
	b.mustRun(t, []byte(allow), "apply", "-f", "-")
	t.Cleanup(func() {
		_, _ = b.run(context.WithoutCancel(t.Context()), []byte(allow), "delete", "--ignore-not-found", "-f", "-")
	})
	link := b.mustTrellis(t, nil, "multicluster", "link", "--cluster-name", "b", "--linked-cluster-name", "a")
	b.checkLinkCredentials(t, link)
	a.mustRun(t, []byte(link), "apply", "-f", "-")
	b.mustRun(t, nil, "-n", ns, "label", "service", "echo", "trellis.io/export=true")
	pods := b.groupPods(t, ns, "mc")
	var want []string
	for _, ip := range pods {
		want = append(want, ip)
	}
	slices.Sort(want)
	eventually(t, 2*time.Minute, "a mirrors b's echo as echo-b with b's pod IPs", func() error {
		got, err := a.mirrorIPs(t.Context(), ns, "echo-b")
		if err == nil && !slices.Equal(got, want) {
			err = fmt.Errorf("echo-b's endpoints %v, want b's pods %v", got, want)
		}
		return err
	})
	t.Logf("linked and mirrored in %s", time.Since(start).Round(time.Second))

	capture := &capture{tshark: tsharkBinary(t), dir: t.TempDir(), iface: "trellis-b"}
	if capture.tshark != "" {
		capture.start(t)
		t.Cleanup(func() { capture.stop(t) })
	}
	const rps, load = 20, 30 * time.Second
	a.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "echo-b." + ns + ".svc.cluster.local:80", Path: "/echo", RPS: rps, Duration: load})
	res := a.jobLoadResult(t, ns, "loadgen", load+3*time.Minute)
	t.Logf("mc-flat: a's loadgen -> echo-b: sent %d, ok %d, failed %d, statuses %v, p50 %.1f ms, p99 %.1f ms",
		res.Sent, res.OK, res.Failed, res.Statuses, res.P50LatencyMS, res.P99LatencyMS)
	if res.Sent < uint64(rps*load/time.Second)*9/10 || res.OK != res.Sent {
		t.Errorf("across clusters: %d of %d requests succeeded, want all of at least %d", res.OK, res.Sent, rps*int(load/time.Second)*9/10)
	}
	loadgenID := "spiffe://cluster-a.local/ns/" + ns + "/sa/loadgen"
	var seen float64
	for name := range pods {
		seen += b.proxyMetrics(t, ns, name).Value("trellis_inbound_authz_allow_total", map[string]string{"client_id": loadgenID})
	}
	t.Logf("b's echo proxies allowed %v requests of %s", seen, loadgenID)
	if seen < float64(res.OK) {
		t.Errorf("b's echo proxies allowed %v requests of %s, want at least the %d that succeeded", seen, loadgenID, res.OK)
	}
	if capture.tshark != "" {
		file := capture.stop(t)
		toB := "tcp && (" + ipFilter(want) + ")"
		payload := capture.count(t, file, toB+" && tcp.len > 0")
		plain := capture.count(t, file, plaintextHTTP)
		t.Logf("capture on the link between the clusters: %d TCP segments with payload to or from b's echo pods, %d frames of plaintext HTTP", payload, plain)
		if payload < int(res.OK) || plain != 0 {
			t.Errorf("capture: %d segments with payload for %d requests (want at least one each), %d plaintext HTTP frames (want 0)", payload, res.OK, plain)
		}
	}

	b.mustRun(t, nil, "-n", ns, "label", "service", "echo", "trellis.io/export-")
	start = time.Now()
	eventually(t, time.Minute, "echo-b removed once b no longer exports echo", func() error {
		if _, err := a.run(t.Context(), nil, "-n", ns, "get", "service", "echo-b"); err == nil {
			return errors.New("echo-b still there")
		}
		return nil
	})
	t.Logf("unexported: the mirror went in %s", time.Since(start).Round(100*time.Millisecond))
}

// checkLinkCredentials: the credentials in the link Secret read services,
// EndpointSlices and pods of b, and nothing else (no Secrets, no writes).
func (c *cluster) checkLinkCredentials(t *testing.T, linkYAML string) {
	t.Helper()
	var sec corev1.Secret
	if err := yaml.Unmarshal([]byte(linkYAML), &sec); err != nil {
		t.Fatalf("link Secret: %v", err)
	}
	kc := filepath.Join(t.TempDir(), "link.kubeconfig")
	if err := os.WriteFile(kc, sec.Data["kubeconfig"], 0o600); err != nil {
		t.Fatal(err)
	}
	as := *c
	as.kubeconfig = kc
	for _, q := range []struct {
		args []string
		want string
	}{
		{[]string{"list", "services"}, "yes"}, {[]string{"watch", "endpointslices.discovery.k8s.io"}, "yes"}, {[]string{"get", "pods"}, "yes"},
		{[]string{"get", "secrets"}, "no"}, {[]string{"list", "configmaps"}, "no"}, {[]string{"create", "services"}, "no"},
		{[]string{"delete", "pods"}, "no"}, {[]string{"update", "endpointslices.discovery.k8s.io"}, "no"},
	} {
		out, _ := as.run(t.Context(), nil, append(append([]string{"auth", "can-i"}, q.args...), "--all-namespaces")...)
		if got := strings.TrimSpace(out); got != q.want {
			t.Errorf("the link's credentials: can-i %s: %q, want %q", strings.Join(q.args, " "), got, q.want)
		}
	}
}

// mirrorIPs are the addresses of a mirror Service's EndpointSlices.
func (c *cluster) mirrorIPs(ctx context.Context, ns, name string) ([]string, error) {
	out, err := c.run(ctx, nil, "-n", ns, "get", "endpointslices", "-l", "kubernetes.io/service-name="+name,
		"-o", "jsonpath={range .items[*].endpoints[*]}{.addresses[0]}{\"\\n\"}{end}")
	if err != nil {
		return nil, err
	}
	ips := strings.Fields(out)
	slices.Sort(ips)
	return ips, nil
}

func ipFilter(ips []string) string {
	var parts []string
	for _, ip := range ips {
		parts = append(parts, "ip.addr=="+ip)
	}
	return strings.Join(parts, " || ")
}
