package local

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// testRoot is an anchor the test holds the key of, standing in for
// `trellis identity` or an external CA.
type testRoot struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestRoot(t *testing.T, cn string) testRoot {
	t.Helper()
	c, k, err := pki.NewRoot(cn, 48*time.Hour, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return testRoot{cert: c, key: k}
}

// issuer signs a new issuer valid from now for validity.
func (r testRoot) issuer(t *testing.T, cn string, validity time.Duration, now time.Time) *pki.Issuer {
	t.Helper()
	is, err := pki.NewIssuer(r.cert, r.key, cn, validity, now)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

func readAnchor(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

func poolWith(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := pki.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func keyPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	data, err := pki.EncodeKeyPEM(k)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// writeStateIssuer replaces issuer.key then issuer.crt, the order the
// controller and `trellis identity` write them in.
func writeStateIssuer(t *testing.T, stateDir string, is *pki.Issuer) {
	t.Helper()
	writeAtomic(t, filepath.Join(stateDir, ca.IssuerKeyFile), keyPEM(t, is.Key))
	writeAtomic(t, filepath.Join(stateDir, ca.IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
}

// secretDir lays out a kubernetes.io/tls Secret volume as the kubelet
// does: files in a timestamped directory, `..data` pointing to it, and each
// visible name a symlink through `..data`.
type secretDir struct {
	dir string
	gen int
}

func newSecretDir(t *testing.T, is *pki.Issuer, bundle ...*x509.Certificate) *secretDir {
	t.Helper()
	s := &secretDir{dir: filepath.Join(t.TempDir(), "issuer")}
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.update(t, is, bundle...)
	for _, n := range []string{ca.SecretCertFile, ca.SecretKeyFile, ca.SecretCAFile} {
		if err := os.Symlink(filepath.Join("..data", n), filepath.Join(s.dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// update writes a new generation, swaps `..data` to it with a rename, and
// removes the old generation, like the kubelet's atomic writer.
func (s *secretDir) update(t *testing.T, is *pki.Issuer, bundle ...*x509.Certificate) {
	t.Helper()
	s.gen++
	gen := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", s.gen, s.gen)
	if err := os.Mkdir(filepath.Join(s.dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for n, data := range map[string][]byte{
		ca.SecretCertFile: pki.EncodeCertsPEM(is.Cert),
		ca.SecretKeyFile:  keyPEM(t, is.Key),
		ca.SecretCAFile:   pki.EncodeCertsPEM(bundle...),
	} {
		if err := os.WriteFile(filepath.Join(s.dir, gen, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(s.dir, "..data"))
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(s.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func certify(ctx context.Context, conn *grpc.ClientConn, t *testing.T) (*apiv1.CertifyResponse, error) {
	csr, _ := csrFor(t, booksID)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return apiv1.NewIdentityClient(conn).Certify(ctx, &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV1), CertificateSigningRequest: csr,
	})
}

// issuerOf returns the certificate that signed the response's leaf,
// checking it really did.
func issuerOf(t *testing.T, resp *apiv1.CertifyResponse) *x509.Certificate {
	t.Helper()
	if len(resp.Chain) < 2 {
		t.Fatalf("chain of %d certificates", len(resp.Chain))
	}
	leaf, err := x509.ParseCertificate(resp.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	is, err := x509.ParseCertificate(resp.Chain[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(is); err != nil {
		t.Fatalf("leaf not signed by the chain's issuer: %v", err)
	}
	return is
}

func (e *env) metric(t *testing.T, line string) bool {
	t.Helper()
	return strings.Contains(e.get(t, "/metrics"), line+"\n")
}

// TestIssuerRotationUnderLoad walks an anchor rotation on the state dir's
// files while clients keep calling Certify: add a second anchor to the
// bundle, then switch to an issuer of the new anchor. Every call succeeds,
// and each certificate chains to the issuer in use at the time.
func TestIssuerRotationUnderLoad(t *testing.T) {
	t.Parallel()
	e := startController(t, meshYAML)
	stateDir := filepath.Join(e.dir, "state")
	anchorA := readAnchor(t, filepath.Join(stateDir, ca.AnchorCertFile))
	oldIssuer := e.c.CA.State().Issuer.Cert
	rootB := newTestRoot(t, "anchor-b")
	newIssuer := rootB.issuer(t, "issuer-b", time.Hour, time.Now())
	both := poolWith(anchorA, rootB.cert)

	type result struct {
		issuer  *x509.Certificate
		anchors int
		chain   [][]byte
	}
	const clients = 2
	var (
		mu      sync.Mutex
		results [clients][]result
		failed  []error
		sawNew  int
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	conn := e.dial(t, nil)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := certify(context.Background(), conn, t)
				mu.Lock()
				if err != nil {
					failed = append(failed, err)
				} else {
					is, perr := x509.ParseCertificate(resp.Chain[1])
					if perr != nil {
						failed = append(failed, perr)
					} else {
						results[i] = append(results[i], result{is, len(resp.TrustAnchors), resp.Chain})
						if is.Equal(newIssuer.Cert) {
							sawNew++
						}
					}
				}
				mu.Unlock()
			}
		}()
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopClients()
	count := func() (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range results {
			n += len(r)
		}
		return n + len(failed)
	}
	eventually(t, "calls before the rotation", func() bool { return count() >= 10 })

	// Stage 1: the bundle gains anchor B.
	writeAtomic(t, filepath.Join(stateDir, ca.BundleFile), pki.EncodeCertsPEM(anchorA, rootB.cert))
	eventually(t, "two trust anchors served", func() bool { return len(e.c.CA.State().Anchors) == 2 })
	// Stage 2: the issuer switches to one signed by B.
	writeStateIssuer(t, stateDir, newIssuer)
	eventually(t, "certificates from the new issuer", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return sawNew >= 10
	})
	stopClients()

	if len(failed) > 0 {
		t.Fatalf("%d of %d Certify calls failed during the rotation, first: %v", len(failed), count(), failed[0])
	}
	var before, after int
	for i, rs := range results {
		switched := false
		for _, r := range rs {
			switch {
			case r.issuer.Equal(newIssuer.Cert):
				switched = true
				after++
				if r.anchors != 2 {
					t.Fatalf("client %d: certificate of the new issuer came with %d trust anchors, want 2", i, r.anchors)
				}
			case r.issuer.Equal(oldIssuer):
				if switched {
					t.Fatalf("client %d: old issuer signed again after the new one", i)
				}
				before++
			default:
				t.Fatalf("client %d: certificate from an unknown issuer %s", i, r.issuer.Subject)
			}
			if _, err := pki.Verify(r.chain, both, x509.ExtKeyUsageClientAuth, booksID, time.Now()); err != nil {
				t.Fatalf("client %d: %v", i, err)
			}
		}
	}
	if before == 0 || after == 0 {
		t.Fatalf("%d certificates before and %d after the swap; want both", before, after)
	}
	t.Logf("Certify calls: %d before the issuer swap, %d after, 0 failed", before, after)
	if !e.metric(t, `trellis_controller_issuer_reload_total{result="error"} 0`) {
		t.Fatal("a reload was refused during a clean rotation")
	}
	if !e.metric(t, `trellis_controller_issuer_reload_total{result="ok"} 2`) {
		t.Fatal("want two reloads: the bundle, then the issuer")
	}
	if got, want := value(e.c.Metrics.IssuerExpiry), float64(newIssuer.Cert.NotAfter.Unix()); got != want {
		t.Fatalf("issuer expiry gauge %v, want %v", got, want)
	}
	if got, want := value(e.c.Metrics.AnchorExpiry), float64(min(anchorA.NotAfter.Unix(), rootB.cert.NotAfter.Unix())); got != want {
		t.Fatalf("anchor expiry gauge %v, want the earliest anchor %v", got, want)
	}
}

// dialOnce makes one Certify over a new connection; the handshake result
// shows in the error.
func dialOnce(t *testing.T, addr string, cfg *tls.Config) (*apiv1.CertifyResponse, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return certify(ctx, conn, t)
}

// TestNewAnchorClientAcceptedAfterSwap: the server's client verification
// and its own certificate follow the files, without a restart.
func TestNewAnchorClientAcceptedAfterSwap(t *testing.T) {
	t.Parallel()
	e := startController(t, meshYAML)
	stateDir := filepath.Join(e.dir, "state")
	anchorA := readAnchor(t, filepath.Join(stateDir, ca.AnchorCertFile))
	rootB := newTestRoot(t, "anchor-b")
	issuerB := rootB.issuer(t, "issuer-b", time.Hour, time.Now())
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := issuerB.Sign(key.Public(), booksID, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	proxyCert := &tls.Certificate{Certificate: issuerB.ChainDER(leaf), PrivateKey: key}

	// Before: anchor B is unknown, its certificate is refused.
	if _, err := dialOnce(t, e.c.GRPCAddr(), clientTLS(e.anchor, proxyCert)); status.Code(err) != codes.Unavailable {
		t.Fatalf("certificate of an unknown anchor: %v, want the handshake refused", err)
	}

	writeAtomic(t, filepath.Join(stateDir, ca.BundleFile), pki.EncodeCertsPEM(anchorA, rootB.cert))
	writeStateIssuer(t, stateDir, issuerB)

	// After: a proxy that trusts only anchor B verifies the controller (its
	// serving certificate was re-issued by issuer B) and is accepted with
	// its certificate from issuer B.
	onlyB := poolWith(rootB.cert)
	var resp *apiv1.CertifyResponse
	eventually(t, "the controller to accept and serve anchor B", func() bool {
		resp, err = dialOnce(t, e.c.GRPCAddr(), clientTLS(onlyB, proxyCert))
		return err == nil
	})
	if is := issuerOf(t, resp); !is.Equal(issuerB.Cert) {
		t.Fatalf("certificate issued by %s, want issuer B", is.Subject)
	}
	if got := e.c.Metrics.ServingCertExpiry; value(got) > float64(issuerB.Cert.NotAfter.Unix()) {
		t.Fatal("serving certificate outlives issuer B")
	}
}

// TestReloadRefusedKeepsServing: a key that does not match and an issuer
// of an anchor outside the bundle are refused, counted, and the previous
// issuer keeps signing.
func TestReloadRefusedKeepsServing(t *testing.T) {
	t.Parallel()
	e := startController(t, meshYAML)
	stateDir := filepath.Join(e.dir, "state")
	oldIssuer := e.c.CA.State().Issuer.Cert
	conn := e.dial(t, nil)
	rootB := newTestRoot(t, "anchor-b")
	stranger := rootB.issuer(t, "stranger", time.Hour, time.Now())

	steps := []struct {
		name   string
		change func()
	}{
		{"mismatched key", func() {
			writeAtomic(t, filepath.Join(stateDir, ca.IssuerKeyFile), keyPEM(t, stranger.Key))
		}},
		{"issuer from an unknown anchor", func() { writeStateIssuer(t, stateDir, stranger) }},
	}
	for i, s := range steps {
		s.change()
		eventually(t, s.name+" refused", func() bool {
			return e.metric(t, fmt.Sprintf(`trellis_controller_issuer_reload_total{result="error"} %d`, i+1))
		})
		resp, err := certify(context.Background(), conn, t)
		if err != nil {
			t.Fatalf("%s: Certify failed: %v", s.name, err)
		}
		if is := issuerOf(t, resp); !is.Equal(oldIssuer) {
			t.Fatalf("%s: signed by %s, want the previous issuer", s.name, is.Subject)
		}
		if _, err := pki.Verify(resp.Chain, e.anchor, x509.ExtKeyUsageClientAuth, booksID, time.Now()); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if code, body := e.getStatus(t, "/ready"); code != 200 {
			t.Fatalf("%s: /ready %d %s", s.name, code, body)
		}
	}
	if !e.metric(t, `trellis_controller_issuer_reload_total{result="ok"} 0`) {
		t.Fatal("a refused change was counted as loaded")
	}
}

// TestIssuerDirSymlinkSwap: --issuer-dir with a Secret volume updated by
// the kubelet's `..data` symlink swap.
func TestIssuerDirSymlinkSwap(t *testing.T) {
	t.Parallel()
	root := newTestRoot(t, "external-root")
	first := root.issuer(t, "issuer-1", time.Hour, time.Now())
	var sd *secretDir
	e := startControllerWith(t, meshYAML, func(_ string, cfg *Config) {
		sd = newSecretDir(t, first, root.cert)
		cfg.IssuerDir = sd.dir
	})
	conn := e.dial(t, nil)
	resp, err := certify(context.Background(), conn, t)
	if err != nil {
		t.Fatal(err)
	}
	if is := issuerOf(t, resp); !is.Equal(first.Cert) {
		t.Fatalf("signed by %s, want issuer-1", is.Subject)
	}
	second := root.issuer(t, "issuer-2", time.Hour, time.Now())
	sd.update(t, second, root.cert)
	eventually(t, "certificates from issuer-2", func() bool {
		resp, err := certify(context.Background(), conn, t)
		if err != nil {
			t.Fatalf("Certify failed during the swap: %v", err)
		}
		return issuerOf(t, resp).Equal(second.Cert)
	})
	if !e.metric(t, `trellis_controller_issuer_reload_total{result="ok"} 1`) {
		t.Fatal("reload not counted")
	}
}

// TestExpiredIssuerFailsAndRecovers: an issuer that expires while the
// controller runs stops signing (FailedPrecondition) and fails /ready; a
// valid issuer written later restores both, without a restart.
func TestExpiredIssuerFailsAndRecovers(t *testing.T) {
	t.Parallel()
	root := newTestRoot(t, "external-root")
	// Long enough to start and make a first call, short enough to wait for.
	const life = 6 * time.Second
	short := root.issuer(t, "short-lived", life, time.Now())
	var sd *secretDir
	e := startControllerWith(t, meshYAML, func(_ string, cfg *Config) {
		sd = newSecretDir(t, short, root.cert)
		cfg.IssuerDir = sd.dir
	})
	// The connection is made while the controller's certificate is valid;
	// a proxy keeps it open across the expiry.
	conn := e.dial(t, nil)
	if _, err := certify(context.Background(), conn, t); err != nil {
		t.Fatalf("first Certify, before the issuer's expiry at %s: %v", short.Cert.NotAfter, err)
	}
	eventually(t, "/ready to fail after the expiry", func() bool {
		code, _ := e.getStatus(t, "/ready")
		return code == 503
	})
	if _, body := e.getStatus(t, "/ready"); !strings.Contains(body, "expired") {
		t.Fatalf("/ready body %q does not say the issuer expired", body)
	}
	_, err := certify(context.Background(), conn, t)
	if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "expired") {
		t.Fatalf("Certify with an expired issuer: %v, want FailedPrecondition saying it expired", err)
	}
	if n := value(e.c.Metrics.CertificatesRefused.WithLabelValues("issuer_expired")); n != 1 {
		t.Fatalf("refused_total{issuer_expired} = %v", n)
	}
	if !e.metric(t, "trellis_controller_issuer_valid 0") {
		t.Fatal("issuer_valid is not 0")
	}
	if got, want := value(e.c.Metrics.IssuerExpiry), float64(short.Cert.NotAfter.Unix()); got != want {
		t.Fatalf("issuer expiry gauge %v, want %v", got, want)
	}
	if got, want := value(e.c.Metrics.AnchorExpiry), float64(root.cert.NotAfter.Unix()); got != want {
		t.Fatalf("anchor expiry gauge %v, want %v", got, want)
	}

	fresh := root.issuer(t, "fresh", time.Hour, time.Now())
	sd.update(t, fresh, root.cert)
	eventually(t, "/ready to recover", func() bool {
		code, _ := e.getStatus(t, "/ready")
		return code == 200
	})
	resp, err := certify(context.Background(), conn, t)
	if err != nil {
		t.Fatalf("Certify on the kept connection after recovery: %v", err)
	}
	if is := issuerOf(t, resp); !is.Equal(fresh.Cert) {
		t.Fatalf("signed by %s, want the fresh issuer", is.Subject)
	}
	// New connections work again: the serving certificate was re-issued.
	if _, err := dialOnce(t, e.c.GRPCAddr(), clientTLS(e.anchor, nil)); err != nil {
		t.Fatalf("new connection after recovery: %v", err)
	}
	if !e.metric(t, "trellis_controller_issuer_valid 1") {
		t.Fatal("issuer_valid is not 1 after recovery")
	}
}

// TestStartsWithExpiredIssuer: an expired Secret at start is not fatal: the
// controller serves, not ready, until a valid issuer is mounted.
func TestStartsWithExpiredIssuer(t *testing.T) {
	t.Parallel()
	root := newTestRoot(t, "external-root")
	expired := root.issuer(t, "expired", time.Minute, time.Now().Add(-30*time.Minute))
	var sd *secretDir
	e := startControllerWith(t, meshYAML, func(_ string, cfg *Config) {
		sd = newSecretDir(t, expired, root.cert)
		cfg.IssuerDir = sd.dir
	})
	code, body := e.getStatus(t, "/ready")
	if code != 503 || !strings.Contains(body, "expired") {
		t.Fatalf("/ready %d %q, want 503 saying the issuer expired", code, body)
	}
	// No certificate can be presented: no handshake succeeds.
	if _, err := dialOnce(t, e.c.GRPCAddr(), clientTLS(e.anchor, nil)); status.Code(err) != codes.Unavailable {
		t.Fatalf("connection with an expired issuer: %v, want Unavailable", err)
	}
	fresh := root.issuer(t, "fresh", time.Hour, time.Now())
	sd.update(t, fresh, root.cert)
	eventually(t, "/ready to recover", func() bool {
		code, _ := e.getStatus(t, "/ready")
		return code == 200
	})
	resp, err := dialOnce(t, e.c.GRPCAddr(), clientTLS(e.anchor, nil))
	if err != nil {
		t.Fatal(err)
	}
	if is := issuerOf(t, resp); !is.Equal(fresh.Cert) {
		t.Fatalf("signed by %s, want the fresh issuer", is.Subject)
	}
}

func TestCAConfigErrors(t *testing.T) {
	dir := t.TempDir()
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(meshYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"neither", Config{}, "--state-dir or --issuer-dir is required"},
		{"both", Config{StateDir: dir, IssuerDir: dir}, "alternatives"},
		{"auto-renew with issuer dir", Config{IssuerDir: dir, AutoRenewIssuer: true}, "--state-dir only"},
		{"issuer dir without the Secret", Config{IssuerDir: dir}, "tls.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.ConfigPath = mesh
			tt.cfg.Listen, tt.cfg.AdminAddr = "127.0.0.1:0", "127.0.0.1:0"
			c, err := Start(context.Background(), tt.cfg)
			if err == nil {
				t.Fatalf("started: %v", c.GRPCAddr())
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}
