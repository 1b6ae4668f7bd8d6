package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/echo"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/test/harness"
)

// Identity lifecycle under load (docs/identity.md): a client proxy sends
// steady HTTP/1.1 traffic to two server workloads while certificates are
// renewed, the issuer and the anchor are rotated, or the controller is
// away. Every request is counted; none may fail, and no proxy may restart.

// identityLoadRPS is the steady request rate of these tests.
const identityLoadRPS = 100

// identityMesh is a client and two echo servers, all meshed, started
// together so that their certificates are issued (and renewed) at about
// the same moments.
type identityMesh struct {
	mesh    *harness.Mesh
	client  *harness.Proxy
	servers []*harness.Proxy
	apps    []*app
	started map[string]float64 // proxy name -> process_start_time_seconds
}

func (im *identityMesh) proxies() []*harness.Proxy {
	return append([]*harness.Proxy{im.client}, im.servers...)
}

func newIdentityMesh(t *testing.T, lifetime time.Duration) *identityMesh {
	t.Helper()
	requireBinaries(t)
	im := &identityMesh{apps: []*app{startApp(t, "echo-1"), startApp(t, "echo-2")}, started: map[string]float64{}}
	store := harness.Store{
		CertificateLifetime: lifetime.String(),
		Services:            []harness.Service{{Name: "echo", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads:           []harness.Workload{{Name: "client", Namespace: ns, ServiceAccount: "client"}},
	}
	for _, a := range im.apps {
		store.Workloads = append(store.Workloads, harness.Workload{
			Name: a.Name, Namespace: ns, ServiceAccount: "echo",
			Endpoints: []harness.Endpoint{{Service: "echo", Port: 80, TargetPort: port(t, a.Addr)}},
		})
	}
	im.mesh = harness.NewMesh(t, bins, &ports, store)
	im.mesh.StartController()
	// Every proxy keeps the bundle it learns, as injected pods do.
	cache := func(name string) string { return filepath.Join(im.mesh.Dir, name+".trust-anchors-cache.pem") }
	for _, a := range im.apps {
		im.servers = append(im.servers, im.mesh.StartProxy(harness.ProxySpec{Workload: a.Name, AppAddr: a.Addr, TrustAnchorsCache: cache(a.Name)}))
	}
	im.client = im.mesh.StartProxy(harness.ProxySpec{Workload: "client", TrustAnchorsCache: cache("client")})
	for _, px := range im.proxies() {
		if err := px.WaitReady(harness.ReadyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, px.Process.LogTail(30))
		}
		ms, err := px.Metrics(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		st, found := ms.Sum("process_start_time_seconds", nil)
		if !found {
			t.Fatalf("%s: no process_start_time_seconds", px.Name)
		}
		im.started[px.Name] = st
		// Every proxy starts with a valid certificate from the current issuer.
		waitGauge(t, px, "trellis_identity_cert_valid", nil, 1, 5*time.Second)
	}
	return im
}

// assertNoRestart checks every proxy still runs as the process it started as.
func (im *identityMesh) assertNoRestart(t *testing.T) {
	t.Helper()
	for _, px := range im.proxies() {
		if px.Process.Exited() {
			t.Errorf("%s exited:\n%s", px.Name, px.Process.LogTail(20))
			continue
		}
		ms, err := px.Metrics(context.Background())
		if err != nil {
			t.Errorf("%s: %v", px.Name, err)
			continue
		}
		if st := ms.Value("process_start_time_seconds", nil); st != im.started[px.Name] {
			t.Errorf("%s restarted: process start time %v, was %v", px.Name, st, im.started[px.Name])
		}
	}
}

// certifyOK returns each proxy's trellis_identity_certify_total{result="ok"}.
func (im *identityMesh) certifyOK(t *testing.T) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, px := range im.proxies() {
		ms, err := px.Metrics(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", px.Name, err)
		}
		out[px.Name] = ms.Value("trellis_identity_certify_total", map[string]string{"result": "ok"})
	}
	return out
}

// waitRenewed waits until every proxy's certify ok count is at least n above
// before.
func (im *identityMesh) waitRenewed(t *testing.T, before map[string]float64, n float64, d time.Duration) {
	t.Helper()
	for _, px := range im.proxies() {
		metricAtLeast(t, px, "trellis_identity_certify_total", map[string]string{"result": "ok"}, before[px.Name]+n, d)
	}
}

// waitIssuer waits until every proxy's certificate is signed by issuer and
// chains to anchor.
func (im *identityMesh) waitIssuer(t *testing.T, issuer, anchor *x509.Certificate, d time.Duration) {
	t.Helper()
	want := map[string]string{"fingerprint": pki.CertFingerprint(issuer), "anchor_fingerprint": pki.CertFingerprint(anchor)}
	for _, px := range im.proxies() {
		waitGauge(t, px, "trellis_identity_cert_issuer_info", want, 1, d)
	}
}

// waitBundle waits until every proxy uses the trust bundle anchors.
func (im *identityMesh) waitBundle(t *testing.T, anchors []*x509.Certificate, d time.Duration) {
	t.Helper()
	want := map[string]string{"fingerprint": pki.Fingerprint(anchors)}
	for _, px := range im.proxies() {
		waitGauge(t, px, "trellis_identity_trust_bundle_info", want, 1, d)
	}
}

// assertNoCertifyErrors checks no proxy saw a failed Certify.
func (im *identityMesh) assertNoCertifyErrors(t *testing.T) {
	t.Helper()
	for _, px := range im.proxies() {
		ms, err := px.Metrics(context.Background())
		if err != nil {
			t.Errorf("%s: %v", px.Name, err)
			continue
		}
		if v := ms.Value("trellis_identity_certify_total", map[string]string{"result": "error"}); v != 0 {
			t.Errorf("%s: %v failed Certify calls", px.Name, v)
		}
	}
}

// steadyLoad sends GET / at a fixed rate through c until stop is called.
// Unlike runLoad it has no fixed duration, so a test can keep traffic
// flowing through however long a rotation takes.
type steadyLoad struct {
	res  *loadResult
	stop chan struct{}
	done chan struct{}
}

func startSteadyLoad(c *http.Client, rps int) *steadyLoad {
	l := &steadyLoad{res: &loadResult{servedBy: map[string]int{}}, stop: make(chan struct{}), done: make(chan struct{})}
	jobs := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				l.res.sent.Add(1)
				// Not tied to the test's context: a request in flight when
				// the load stops must finish, not be counted as failed.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, body, err := get(ctx, c, "/")
				cancel()
				switch {
				case err != nil:
					l.res.fail(fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
				case resp.StatusCode != 200 || len(body) != echo.RootBodySize:
					l.res.fail(fmt.Sprintf("%s: %s, %d bytes, served by %q", time.Now().Format("15:04:05.000"), resp.Status, len(body), resp.Header.Get("Echo-Served-By")))
				default:
					l.res.ok.Add(1)
					l.res.mu.Lock()
					l.res.servedBy[resp.Header.Get("Echo-Served-By")]++
					l.res.mu.Unlock()
				}
			}
		}()
	}
	go func() {
		defer close(l.done)
		defer wg.Wait()
		defer close(jobs)
		tick := time.NewTicker(time.Second / time.Duration(rps))
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
				select {
				case jobs <- struct{}{}:
				case <-l.stop:
					return
				}
			}
		}
	}()
	return l
}

// finish stops the load, waits for requests in flight, and checks that
// every request succeeded and both servers served.
func (l *steadyLoad) finish(t *testing.T) *loadResult {
	t.Helper()
	close(l.stop)
	<-l.done
	l.res.check(t)
	for _, name := range []string{"echo-1", "echo-2"} {
		if l.res.servedBy[name] == 0 {
			t.Errorf("%s served nothing: the load did not reach both servers (%v)", name, l.res.servedBy)
		}
	}
	return l.res
}

// startLoad starts the load through the client proxy after one
// request proved the path.
func (im *identityMesh) startLoad(t *testing.T) *steadyLoad {
	t.Helper()
	c := meshClient(im.client.OutboundAddr, 15*time.Second)
	t.Cleanup(c.CloseIdleConnections)
	if resp, _, err := get(t.Context(), c, "/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	waitGauge(t, im.client, "trellis_endpoints", map[string]string{"dst_service": echoAuthority}, 2, 10*time.Second)
	l := startSteadyLoad(c, identityLoadRPS)
	t.Cleanup(func() {
		select {
		case <-l.stop:
		default:
			close(l.stop)
			<-l.done
		}
	})
	return l
}

// readCerts reads a PEM file of the state dir.
func readCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return certs
}

// trellis runs the trellis CLI and returns its combined output.
func trellisCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.CLI, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// TestIdentityShortLivedCertificatesUnderLoad: certificates of 10 s are
// renewed at least three times by every proxy under steady traffic.
func TestIdentityShortLivedCertificatesUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	t.Parallel()
	// The store accepts lifetimes down to 5 s; 10 s gives three renewals
	// (at 70 %) in about 21 s.
	im := newIdentityMesh(t, 10*time.Second)
	before := im.certifyOK(t)
	load := im.startLoad(t)
	im.waitRenewed(t, before, 3, 40*time.Second)
	r := load.finish(t)
	after := im.certifyOK(t)
	for _, px := range im.proxies() {
		t.Logf("%s: %v renewals during the load", px.Name, after[px.Name]-before[px.Name])
	}
	t.Logf("short-lived certificates: sent %d, failed %d", r.sent.Load(), r.sent.Load()-r.ok.Load())
	im.assertNoCertifyErrors(t)
	im.assertNoRestart(t)
}

// TestIdentityIssuerRotatedUnderLoad writes a new issuer, signed by the same
// anchor, into the controller's state dir under load: the controller
// reloads it and every proxy moves to it at its next renewal.
func TestIdentityIssuerRotatedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	t.Parallel()
	im := newIdentityMesh(t, 10*time.Second)
	state := im.mesh.StateDir
	anchor := readCerts(t, filepath.Join(state, "anchor.crt"))[0]
	oldIssuer := readCerts(t, filepath.Join(state, "issuer.crt"))[0]
	im.waitIssuer(t, oldIssuer, anchor, 5*time.Second)

	load := im.startLoad(t)
	time.Sleep(2 * time.Second)

	keyPEM, err := os.ReadFile(filepath.Join(state, "anchor.key"))
	if err != nil {
		t.Fatal(err)
	}
	anchorKey, err := pki.ParseKeyPEM(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := pki.NewTrustDomainIssuer(anchor, anchorKey, "trellis-issuer-rotated", im.mesh.TrustDomain(), 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newKeyPEM, err := pki.EncodeKeyPEM(issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	// Key first, certificate last, each renamed into place.
	if err := pki.WriteFileAtomic(filepath.Join(state, "issuer.key"), newKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(state, "issuer.crt"), pki.EncodeCertsPEM(issuer.Cert), 0o600); err != nil {
		t.Fatal(err)
	}
	scrapeAtLeast(t, "controller", im.mesh.ControllerAdminAddr, "trellis_controller_issuer_reload_total", map[string]string{"result": "ok"}, 1, 10*time.Second)
	// Renewal at 70 % of 10 s: every proxy is on the new issuer within ~7 s.
	im.waitIssuer(t, issuer.Cert, anchor, 20*time.Second)
	time.Sleep(2 * time.Second) // traffic between proxies all on the new issuer
	r := load.finish(t)
	t.Logf("issuer rotation: sent %d, failed %d", r.sent.Load(), r.sent.Load()-r.ok.Load())
	if ms, err := harness.Scrape(context.Background(), im.mesh.ControllerAdminAddr); err == nil {
		if v := ms.Value("trellis_controller_issuer_reload_total", map[string]string{"result": "error"}); v != 0 {
			t.Errorf("controller refused %v issuer reloads", v)
		}
	}
	im.assertNoCertifyErrors(t)
	im.assertNoRestart(t)
}

// TestIdentityAnchorRotatedUnderLoad walks `trellis identity rotate`
// through its three stages under load.
func TestIdentityAnchorRotatedUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	t.Parallel()
	im := newIdentityMesh(t, 10*time.Second)
	state := im.mesh.StateDir
	oldAnchor := readCerts(t, filepath.Join(state, "anchor.crt"))[0]
	var admin []string
	for _, px := range im.proxies() {
		admin = append(admin, "--proxy-admin", px.AdminAddr)
	}
	rotate := func(stage string) (string, error) {
		return trellisCLI(t, append([]string{"identity", "rotate", "--state-dir", state, "--stage", stage}, admin...)...)
	}

	load := im.startLoad(t)
	time.Sleep(2 * time.Second)

	// Out of order first: refused, nothing changes.
	if out, err := rotate("switch-issuer"); err == nil {
		t.Fatalf("switch-issuer before add-anchor succeeded:\n%s", out)
	}

	if out, err := rotate("add-anchor"); err != nil {
		t.Fatalf("add-anchor: %v\n%s", err, out)
	}
	bundle := readCerts(t, filepath.Join(state, "bundle.crt"))
	if len(bundle) != 2 {
		t.Fatalf("bundle after add-anchor holds %d anchors, want 2", len(bundle))
	}
	newAnchor := bundle[1]
	// Proxies learn the bundle at their next renewal (~7 s).
	im.waitBundle(t, bundle, 20*time.Second)

	if out, err := rotate("switch-issuer"); err != nil {
		t.Fatalf("switch-issuer: %v\n%s", err, out)
	}
	issuer := readCerts(t, filepath.Join(state, "issuer.crt"))[0]
	if err := issuer.CheckSignatureFrom(newAnchor); err != nil {
		t.Fatalf("issuer after switch-issuer is not signed by the new anchor: %v", err)
	}
	// The proxies still hold certificates of the old issuer (renewal is
	// seconds away): remove-old must refuse.
	if out, err := rotate("remove-old"); err == nil {
		t.Errorf("remove-old right after switch-issuer succeeded although proxies had not renewed:\n%s", out)
	} else if !strings.Contains(out, "not ready") {
		t.Errorf("remove-old refused without naming the proxies that are not ready:\n%s", out)
	}

	var out string
	if err := eventually(30*time.Second, func() error {
		var err error
		out, err = rotate("remove-old")
		if err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
		return err
	}); err != nil {
		t.Fatalf("remove-old never succeeded: %v\n%s", err, out)
	}
	// It succeeded, so every proxy had renewed onto the new chain.
	im.waitIssuer(t, issuer, newAnchor, time.Second)
	final := readCerts(t, filepath.Join(state, "bundle.crt"))
	if len(final) != 1 || !final[0].Equal(newAnchor) {
		t.Fatalf("bundle after remove-old holds %d anchors, want the new one alone", len(final))
	}
	im.waitBundle(t, final, 20*time.Second)
	time.Sleep(2 * time.Second) // traffic with the old anchor trusted nowhere
	r := load.finish(t)
	t.Logf("anchor rotation: sent %d, failed %d", r.sent.Load(), r.sent.Load()-r.ok.Load())

	if out, err := rotate("remove-old"); err != nil || !strings.Contains(out, "already done") {
		t.Errorf("remove-old again: %v, want already done:\n%s", err, out)
	}
	if newAnchor.Equal(oldAnchor) {
		t.Fatal("the rotation did not change the anchor")
	}
	im.assertNoCertifyErrors(t)
	im.assertNoRestart(t)

	im.restartAfterRotation(t, oldAnchor, final, issuer, newAnchor)
}

// restartAfterRotation crashes the client proxy after an anchor rotation
// and starts it again as a pod's proxy container would be: with its
// original bootstrap anchors (the old anchor alone, which no longer
// verifies the controller) and its trust anchors cache. It must come back
// from the cache and carry mTLS traffic. The control, a second proxy of
// the same workload started without the cache, never becomes ready and
// says why.
func (im *identityMesh) restartAfterRotation(t *testing.T, oldAnchor *x509.Certificate, bundle []*x509.Certificate, issuer, newAnchor *x509.Certificate) {
	t.Helper()
	start := time.Now()
	defer func() {
		t.Logf("restart after the rotation, with its control: %s", time.Since(start).Round(100*time.Millisecond))
	}()
	bundleFP, oldFP := pki.Fingerprint(bundle), pki.Fingerprint([]*x509.Certificate{oldAnchor})
	bootstrap := filepath.Join(im.mesh.Dir, "bootstrap-anchors.pem")
	if err := os.WriteFile(bootstrap, pki.EncodeCertsPEM(oldAnchor), 0o644); err != nil {
		t.Fatal(err)
	}
	old := im.client
	if got := pki.Fingerprint(readCerts(t, old.TrustAnchorsCache)); got != bundleFP {
		t.Fatalf("%s's cache holds bundle %.12s, want the rotated bundle %.12s", old.Name, got, bundleFP)
	}

	control := im.mesh.StartProxy(harness.ProxySpec{
		Workload: "client", Name: "client-nocache", InboundAddr: im.mesh.Ports.Addr(t), TrustAnchors: bootstrap,
	})
	old.Process.Kill() // a crash or OOM kill: no drain
	restarted := time.Now()
	px := im.mesh.StartProxy(harness.ProxySpec{Workload: "client", TrustAnchors: bootstrap, TrustAnchorsCache: old.TrustAnchorsCache})
	if err := px.WaitReady(harness.ReadyTimeout); err != nil {
		t.Fatalf("client restarted with its cache after the rotation: %v\n%s", err, px.Process.LogTail(30))
	}
	t.Logf("client restarted from its trust anchors cache: ready after %s", time.Since(restarted).Round(time.Millisecond))
	im.client = px
	waitGauge(t, px, "trellis_identity_trust_bundle_info", map[string]string{"fingerprint": bundleFP}, 1, 5*time.Second)
	waitGauge(t, px, "trellis_identity_cert_issuer_info", map[string]string{
		"fingerprint": pki.CertFingerprint(issuer), "anchor_fingerprint": pki.CertFingerprint(newAnchor)}, 1, 5*time.Second)
	if _, ok := logLine(px.Process.LogTail(200), `msg="trust anchors from the cache"`, "file="+px.TrustAnchorsCache, "fingerprint="+bundleFP, "instead_of="+bootstrap); !ok {
		t.Errorf("the restarted proxy does not log that it started from its cache:\n%s", px.Process.LogTail(30))
	}

	c := meshClient(px.OutboundAddr, 15*time.Second)
	defer c.CloseIdleConnections()
	r := runLoad(t.Context(), c, "/", identityLoadRPS, 2*time.Second)
	r.check(t)
	for _, name := range []string{"echo-1", "echo-2"} {
		if r.servedBy[name] == 0 {
			t.Errorf("%s served nothing through the restarted client (%v)", name, r.servedBy)
		}
	}
	// Counted by the new process only: every request went over mTLS to a
	// server proving the echo identity.
	metricAtLeast(t, px, "trellis_responses_total", map[string]string{
		"direction": "outbound", "peer_identity": identityOf("echo"), "tls": "true", "dst_service": echoAuthority,
	}, float64(r.ok.Load()), 5*time.Second)
	t.Logf("after the restart: sent %d, failed %d", r.sent.Load(), r.sent.Load()-r.ok.Load())

	// The control: the bootstrap anchor cannot verify the controller's
	// certificate, so it never gets one of its own. Three failed Certify
	// calls (about 2 s of backoff) within 10 s.
	ms := metricAtLeast(t, control, "trellis_identity_certify_total", map[string]string{"result": "error"}, 3, 10*time.Second)
	if v := ms.Value("trellis_identity_certify_total", map[string]string{"result": "ok"}); v != 0 {
		t.Errorf("the proxy without a cache got %g certificates", v)
	}
	if v := ms.Value("trellis_identity_trust_bundle_info", map[string]string{"fingerprint": oldFP}); v != 1 {
		t.Errorf("the proxy without a cache does not report the bootstrap bundle %.12s:\n%s", oldFP, ms.Series("trellis_identity_trust_bundle_info"))
	}
	code, body, err := harness.HTTPStatus(t.Context(), "http://"+control.AdminAddr+"/ready")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "not connected to the control plane") {
		t.Errorf("/ready of the proxy without a cache: %d %q %v, want 503 not connected to the control plane", code, body, err)
	}
	if line, ok := logLine(control.Process.LogTail(200), `msg="certify failed"`, "does not chain to a trusted anchor"); !ok {
		t.Errorf("the proxy without a cache does not say the controller's certificate is not trusted:\n%s", control.Process.LogTail(30))
	} else {
		t.Logf("the proxy without a cache, not ready after %s: %s", time.Since(restarted).Round(100*time.Millisecond), line)
	}
	if control.Process.Exited() {
		t.Errorf("the proxy without a cache exited:\n%s", control.Process.LogTail(20))
	}
}

// logLine returns the first line of log that holds every part.
func logLine(log string, parts ...string) (string, bool) {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return line, true
		}
	}
	return "", false
}

// TestIdentityControllerDownUnderLoad kills the controller for longer than
// the renewal interval but less than the certificate lifetime, under load;
// brought back with the same state dir, every proxy renews. Certificates
// live 40 s from issuance and are backdated 1 min for clock skew, so 70 %
// of their validity falls 10 s after issuance: the outage (25 s) spans
// several renewal attempts and ends 15 s before the certificates expire.
func TestIdentityControllerDownUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	t.Parallel()
	const lifetime = 40 * time.Second
	im := newIdentityMesh(t, lifetime)
	// The proxies started together: their certificates were issued within
	// about a second of each other.
	before := im.certifyOK(t)
	load := im.startLoad(t)
	im.mesh.Controller().Kill()
	killed := time.Now()
	time.Sleep(25 * time.Second)
	for _, px := range im.proxies() {
		metricAtLeast(t, px, "trellis_identity_certify_total", map[string]string{"result": "error"}, 1, time.Second)
	}
	after := im.certifyOK(t)
	for _, px := range im.proxies() {
		if after[px.Name] != before[px.Name] {
			t.Fatalf("%s renewed while the controller was down", px.Name)
		}
	}
	im.mesh.StartController()
	t.Logf("controller down for %s", time.Since(killed).Round(100*time.Millisecond))
	im.waitRenewed(t, before, 1, 15*time.Second)
	time.Sleep(2 * time.Second)
	r := load.finish(t)
	t.Logf("controller down: sent %d, failed %d", r.sent.Load(), r.sent.Load()-r.ok.Load())
	for _, px := range im.proxies() {
		waitGauge(t, px, "trellis_identity_cert_valid", nil, 1, time.Second)
	}
	im.assertNoRestart(t)
}
