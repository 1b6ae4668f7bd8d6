package identitycmd

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// fakeProxyAdmin serves a proxy's identity metrics on loopback from a real
// Prometheus registry, so rotate reads the same text format a proxy emits.
type fakeProxyAdmin struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bundle *prometheus.GaugeVec
	issuer *prometheus.GaugeVec
}

func newFakeProxyAdmin(t *testing.T, withIssuerMetric bool) *fakeProxyAdmin {
	t.Helper()
	reg := prometheus.NewRegistry()
	p := &fakeProxyAdmin{
		bundle: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: trustBundleMetric, Help: "trust bundle in use"}, []string{"fingerprint"}),
		issuer: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: certIssuerMetric, Help: "issuer of the current certificate"}, []string{"fingerprint", "anchor_fingerprint"}),
	}
	reg.MustRegister(p.bundle)
	if withIssuerMetric {
		reg.MustRegister(p.issuer)
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	mux := http.NewServeMux()
	mux.Handle("/metrics", h)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *fakeProxyAdmin) addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// report sets what the proxy says it uses: a bundle and the issuer (with
// the anchor it chains to) of its certificate.
func (p *fakeProxyAdmin) report(bundle []*x509.Certificate, issuer, anchor *x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bundle.Reset()
	p.bundle.WithLabelValues(pki.Fingerprint(bundle)).Set(1)
	p.issuer.Reset()
	if issuer != nil {
		p.issuer.WithLabelValues(pki.CertFingerprint(issuer), pki.CertFingerprint(anchor)).Set(1)
	}
}

type stateFiles struct {
	t   *testing.T
	dir string
}

func (s stateFiles) cert(name string) *x509.Certificate {
	s.t.Helper()
	return fileCerts(s.t, filepath.Join(s.dir, name))[0]
}
func (s stateFiles) bundle() []*x509.Certificate {
	return fileCerts(s.t, filepath.Join(s.dir, bundleFile))
}

func TestRotateStages(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	// The four files of a controller state dir (the extra ca.crt is ignored).
	newCA(t, dir, now, "8760h")
	st := stateFiles{t, dir}
	oldAnchor, oldIssuer := st.cert(anchorCertFile), st.cert(issuerCertFile)

	proxyA := newFakeProxyAdmin(t, true)
	proxyB := newFakeProxyAdmin(t, true)
	// Both proxies start on the old world: one anchor, the old issuer.
	proxyA.report([]*x509.Certificate{oldAnchor}, oldIssuer, oldAnchor)
	proxyB.report([]*x509.Certificate{oldAnchor}, oldIssuer, oldAnchor)
	proxies := []string{"--proxy-admin", proxyA.addr(), "--proxy-admin", proxyB.addr()}

	rotate := func(args ...string) (string, error) {
		out, errOut, err := run(t, now, nil, append([]string{"rotate", "--state-dir", dir}, args...)...)
		return out + errOut, err
	}
	expect := func(step string, out string, err error, wantErr, wantOut string) {
		t.Helper()
		if wantErr == "" && err != nil || wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("%s: err = %v, want %q\n%s", step, err, wantErr, out)
		}
		if wantOut != "" && !strings.Contains(out, wantOut) {
			t.Fatalf("%s: output lacks %q:\n%s", step, wantOut, out)
		}
	}

	out, err := rotate("--status")
	expect("status idle", out, err, "", "no rotation in progress")
	out, err = rotate(append([]string{"--stage", "switch-issuer"}, proxies...)...)
	expect("switch before add", out, err, "run --stage add-anchor first", "")
	if _, err := os.Stat(filepath.Join(dir, bundleFile)); !os.IsNotExist(err) {
		t.Fatal("a refused stage wrote bundle.crt")
	}

	// Stage 1.
	out, err = rotate("--stage", "add-anchor")
	expect("add-anchor", out, err, "", "add-anchor: done")
	newAnchor := st.cert(nextAnchorCertFile)
	if b := st.bundle(); len(b) != 2 || pki.Fingerprint(b) != pki.Fingerprint([]*x509.Certificate{oldAnchor, newAnchor}) {
		t.Fatalf("bundle after add-anchor: %d certs", len(b))
	}
	if !newAnchor.IsCA || newAnchor.CheckSignatureFrom(newAnchor) != nil || st.cert(anchorCertFile).Equal(newAnchor) {
		t.Fatal("the new anchor is not a new self-signed CA")
	}
	out, err = rotate("--stage", "add-anchor")
	expect("add-anchor again", out, err, "", "already done")
	if !st.cert(nextAnchorCertFile).Equal(newAnchor) || len(st.bundle()) != 2 {
		t.Fatal("add-anchor run twice changed the state")
	}
	out, err = rotate(append([]string{"--stage", "remove-old"}, proxies...)...)
	expect("remove-old before switch", out, err, "run --stage switch-issuer first", "")
	out, err = rotate("--status")
	expect("status added", out, err, "", "next stage: switch-issuer")

	// Stage 2 is refused until every proxy has the new bundle.
	out, err = rotate("--stage", "switch-issuer")
	expect("switch without proxies", out, err, "no --proxy-admin", "")
	newBundle := st.bundle()
	proxyA.report(newBundle, oldIssuer, oldAnchor)
	out, err = rotate(append([]string{"--stage", "switch-issuer"}, proxies...)...)
	expect("switch with proxy B on the old bundle", out, err, "proxy "+proxyB.addr()+": trust bundle fingerprint is "+pki.Fingerprint([]*x509.Certificate{oldAnchor}), "")
	if !st.cert(issuerCertFile).Equal(oldIssuer) {
		t.Fatal("a refused switch-issuer replaced the issuer")
	}
	proxyB.report(newBundle, oldIssuer, oldAnchor)
	out, err = rotate(append([]string{"--stage", "switch-issuer"}, proxies...)...)
	expect("switch-issuer", out, err, "", "switch-issuer: done")
	newIssuer := st.cert(issuerCertFile)
	if newIssuer.Equal(oldIssuer) || newIssuer.CheckSignatureFrom(newAnchor) != nil || !st.cert(anchorCertFile).Equal(newAnchor) {
		t.Fatal("after switch-issuer the issuer is not signed by the new anchor in anchor.crt")
	}
	if _, err := os.Stat(filepath.Join(dir, nextAnchorCertFile)); !os.IsNotExist(err) {
		t.Fatal("anchor.next.crt left behind")
	}
	verifyOut := mustRun(t, now, "verify", "--bundle", filepath.Join(dir, bundleFile), "--issuer", filepath.Join(dir, issuerCertFile), "--issuer-key", filepath.Join(dir, issuerKeyFile))
	if !strings.Contains(verifyOut, pki.CertFingerprint(newAnchor)[:16]) {
		t.Fatalf("verify does not name the new anchor:\n%s", verifyOut)
	}
	for _, stage := range []string{"switch-issuer", "add-anchor"} {
		out, err = rotate(append([]string{"--stage", stage}, proxies...)...)
		expect(stage+" after switch", out, err, "", "already done")
	}
	if !st.cert(issuerCertFile).Equal(newIssuer) {
		t.Fatal("re-running switch-issuer replaced the issuer again")
	}

	// Stage 3 is refused while a proxy still holds a certificate from the
	// old chain.
	proxyA.report(newBundle, newIssuer, newAnchor)
	out, err = rotate(append([]string{"--stage", "remove-old"}, proxies...)...)
	expect("remove-old with proxy B on the old issuer", out, err, "proxy "+proxyB.addr()+": still holds a certificate from issuer "+pki.CertFingerprint(oldIssuer)[:16], "")
	if len(st.bundle()) != 2 {
		t.Fatal("a refused remove-old changed the bundle")
	}
	proxyB.report(newBundle, newIssuer, newAnchor)
	out, err = rotate(append([]string{"--stage", "remove-old"}, proxies...)...)
	expect("remove-old", out, err, "", "rotation is complete")
	if b := st.bundle(); len(b) != 1 || !b[0].Equal(newAnchor) {
		t.Fatalf("bundle after remove-old: %d certs", len(b))
	}
	out, err = rotate(append([]string{"--stage", "remove-old"}, proxies...)...)
	expect("remove-old again", out, err, "", "already done")
	out, err = rotate("--status")
	expect("status after", out, err, "", "no rotation in progress")
}

func TestRotateRefusesUnprovableProxies(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	newCA(t, dir, now, "8760h")
	st := stateFiles{t, dir}
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "add-anchor")
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "switch-issuer", "--skip-proxy-check")
	bundle, anchor, issuer := st.bundle(), st.cert(anchorCertFile), st.cert(issuerCertFile)

	oldProxy := newFakeProxyAdmin(t, false) // exports no issuer metric
	oldProxy.report(bundle, nil, nil)
	noCert := newFakeProxyAdmin(t, true)
	noCert.report(bundle, issuer, anchor)
	noCert.issuer.WithLabelValues(pki.CertFingerprint(issuer), pki.CertFingerprint(anchor)).Set(0) // certificate dropped
	gone := newFakeProxyAdmin(t, true)
	gone.srv.Close()
	renewed := newFakeProxyAdmin(t, true)
	renewed.report(bundle, issuer, anchor)

	for _, tt := range []struct {
		name  string
		proxy string
		want  string
	}{
		{"no issuer metric", oldProxy.addr(), "does not report " + certIssuerMetric},
		{"certificate dropped", noCert.addr(), "no current certificate issuer"},
		{"unreachable", gone.addr(), "cannot read its metrics"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := run(t, now, nil, "rotate", "--state-dir", dir, "--stage", "remove-old", "--proxy-admin", renewed.addr(), "--proxy-admin", tt.proxy)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "1 of 2 proxies") {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if len(st.bundle()) != 2 {
				t.Fatal("refused remove-old changed the bundle")
			}
		})
	}
}

func TestRotateFinishesInterruptedStages(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	newCA(t, dir, now, "8760h")
	st := stateFiles{t, dir}
	oldAnchor := st.cert(anchorCertFile)

	// add-anchor stopped before writing the bundle.
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "add-anchor")
	next := st.cert(nextAnchorCertFile)
	if err := pki.WriteFileAtomic(filepath.Join(dir, bundleFile), pki.EncodeCertsPEM(oldAnchor), fileMode); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, now, "rotate", "--state-dir", dir, "--status"); !strings.Contains(out, "add-anchor was interrupted") {
		t.Fatalf("status:\n%s", out)
	}
	if _, _, err := run(t, now, nil, "rotate", "--state-dir", dir, "--stage", "switch-issuer", "--skip-proxy-check"); err == nil {
		t.Fatal("switch-issuer ran on an unfinished add-anchor")
	}
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "add-anchor")
	if !st.cert(nextAnchorCertFile).Equal(next) || len(st.bundle()) != 2 {
		t.Fatal("re-running add-anchor did not finish with the same new anchor")
	}

	// switch-issuer stopped after writing the new issuer and anchor.key.
	nextKeyPEM, err := os.ReadFile(filepath.Join(dir, nextAnchorKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	nextKey, err := pki.ParseKeyPEM(nextKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(next, nextKey, "trellis-issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeKeyAndCert(filepath.Join(dir, issuerKeyFile), filepath.Join(dir, issuerCertFile), is.Key, is.Cert); err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, anchorKeyFile), nextKeyPEM, fileMode); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, now, "rotate", "--state-dir", dir, "--status"); !strings.Contains(out, "switch-issuer was interrupted") {
		t.Fatalf("status:\n%s", out)
	}
	mustRun(t, now, "rotate", "--state-dir", dir, "--stage", "switch-issuer")
	if !st.cert(anchorCertFile).Equal(next) || !st.cert(issuerCertFile).Equal(is.Cert) {
		t.Fatal("re-running switch-issuer did not finish the switch with the issuer already written")
	}
	keyPEM, _ := os.ReadFile(filepath.Join(dir, anchorKeyFile))
	if !bytes.Equal(keyPEM, nextKeyPEM) {
		t.Fatal("anchor.key is not the new anchor's key")
	}
}

func TestRotateRefusesBrokenStateDirs(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name   string
		break_ func(t *testing.T, dir string)
		want   string
	}{
		{"empty dir", func(t *testing.T, dir string) {}, "not a controller state dir"},
		{"issuer of another anchor", func(t *testing.T, dir string) {
			newCA(t, dir, now, "8760h")
			other := t.TempDir()
			newCA(t, other, now, "8760h")
			for _, n := range []string{issuerCertFile, issuerKeyFile} {
				data, _ := os.ReadFile(filepath.Join(other, n))
				if err := os.WriteFile(filepath.Join(dir, n), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}, "not signed by"},
		{"bundle without the anchor", func(t *testing.T, dir string) {
			newCA(t, dir, now, "8760h")
			other := t.TempDir()
			mustRun(t, now, "create-anchor", "--out-dir", other)
			data, _ := os.ReadFile(filepath.Join(other, anchorCertFile))
			if err := os.WriteFile(filepath.Join(dir, bundleFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}, "does not hold anchor.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.break_(t, dir)
			_, _, err := run(t, now, nil, "rotate", "--state-dir", dir, "--status")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}
