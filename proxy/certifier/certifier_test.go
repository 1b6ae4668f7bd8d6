package certifier

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

var workloadID = identity.ID{TrustDomain: "cluster.local", Namespace: "books", ServiceAccount: "reviews"}

// identityServer is the test's counterpart of the controller: it checks the
// token and CSR and signs with an internal/pki issuer.
type identityServer struct {
	apiv1.UnimplementedIdentityServer
	root   *x509.Certificate
	issuer *pki.Issuer

	mu       sync.Mutex
	token    string
	lifetime time.Duration
	anchors  []*x509.Certificate // sent as trust_anchors (nil: none)
	fail     func(req *apiv1.CertifyRequest) (*apiv1.CertifyResponse, error)
	calls    int
	failures int
	csrKeys  map[string]bool // distinct public keys seen in CSRs
}

func (s *identityServer) Certify(_ context.Context, req *apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail != nil {
		s.failures++
		return s.fail(req)
	}
	if string(req.GetToken()) != s.token {
		s.failures++
		return nil, status.Error(codes.Unauthenticated, "bad token")
	}
	csr, id, err := pki.ParseCSR(req.GetCertificateSigningRequest())
	if err != nil {
		s.failures++
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if id.String() != req.GetIdentity() {
		s.failures++
		return nil, status.Error(codes.PermissionDenied, "CSR identity differs from the request")
	}
	der, _ := x509.MarshalPKIXPublicKey(csr.PublicKey)
	s.csrKeys[string(der)] = true
	leaf, err := s.issuer.Sign(csr.PublicKey, id, s.lifetime, time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &apiv1.CertifyResponse{Chain: s.issuer.ChainDER(leaf)}
	for _, a := range s.anchors {
		resp.TrustAnchors = append(resp.TrustAnchors, a.Raw)
	}
	return resp, nil
}

func (s *identityServer) set(f func(s *identityServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *identityServer) counts() (calls, failures int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.failures
}

type env struct {
	srv       *identityServer
	store     *meshtls.Store
	client    apiv1.IdentityClient
	tokenFile string
	reg       *prometheus.Registry
}

// newEnv starts an Identity server over TLS on loopback, proving the
// controller identity, and a client that verifies it via meshtls.
func newEnv(t testing.TB, lifetime time.Duration) *env {
	t.Helper()
	now := time.Now()
	root, rootKey, err := pki.NewRoot("test root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := pki.NewIssuer(root, rootKey, "test issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	ctrlID := identity.Controller("cluster.local")
	ctrlKey, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ctrlLeaf, err := issuer.Sign(ctrlKey.Public(), ctrlID, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	srv := &identityServer{root: root, issuer: issuer, token: "token-1", lifetime: lifetime, csrKeys: map[string]bool{}}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: issuer.ChainDER(ctrlLeaf), PrivateKey: ctrlKey}},
		ClientAuth:   tls.RequestClientCert,
	})))
	apiv1.RegisterIdentityServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	store, err := meshtls.NewStore(workloadID, []*x509.Certificate{root})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(store.ControlPlaneConfig(ctrlID))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("token-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, store: store, client: apiv1.NewIdentityClient(cc), tokenFile: tokenFile, reg: prometheus.NewRegistry()}
}

func (e *env) config() Config {
	return Config{
		Identity:   workloadID,
		TokenFile:  e.tokenFile,
		Client:     e.client,
		Store:      e.store,
		Registerer: e.reg,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
	}
}

// start runs the certifier until the test ends, and checks it returns.
func (e *env) start(t *testing.T, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v after cancel, want nil", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestCertifyAndRenew(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	e.start(t, e.config())
	waitFor(t, "first certificate", 10*time.Second, e.store.Ready)
	if got := e.store.Leaf(); got == nil || got.URIs[0].String() != workloadID.String() {
		t.Fatalf("leaf = %v", got)
	}

	// Rotate the token: the certifier must pick up the new file content.
	e.srv.set(func(s *identityServer) { s.token = "token-2" })
	if err := pki.WriteFileAtomic(e.tokenFile, []byte("token-2"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Certificates live 2s: watch several renewals, each before the
	// previous certificate expired.
	seen := map[string]bool{}
	var last *x509.Certificate
	waitFor(t, "four renewals", 20*time.Second, func() bool {
		leaf := e.store.Leaf()
		if !e.store.Ready() {
			t.Fatalf("store not ready at %v: certificate %v expired before renewal", time.Now(), leaf.NotAfter)
		}
		if last == nil || !leaf.Equal(last) {
			seen[leaf.SerialNumber.String()] = true
			last = leaf
		}
		return len(seen) >= 5
	})

	if v, _ := metricValue(t, e.reg, "trellis_identity_certify_total", map[string]string{"result": "ok"}); v < 5 {
		t.Errorf("certify ok = %v, want >= 5", v)
	}
	if v, _ := metricValue(t, e.reg, "trellis_control_plane_connected", map[string]string{"service": "identity"}); v != 1 {
		t.Errorf("control plane connected = %v, want 1", v)
	}
	waitFor(t, "expiry metric", 5*time.Second, func() bool {
		v, _ := metricValue(t, e.reg, "trellis_identity_cert_expiry_timestamp_seconds", nil)
		return v == float64(e.store.Expiry().Unix())
	})
	e.srv.set(func(s *identityServer) {
		if len(s.csrKeys) != 1 {
			t.Errorf("CSRs carried %d different keys, want the same key every time", len(s.csrKeys))
		}
	})
}

func TestFailuresKeepCertificate(t *testing.T) {
	e := newEnv(t, time.Hour)
	cfg := e.config()
	cfg.RenewFraction = 0.7
	e.start(t, cfg)
	waitFor(t, "first certificate", 10*time.Second, e.store.Ready)
	// Each case starts a second Run on the same store: it certifies at
	// once, so its calls exercise the failure path while a good
	// certificate is installed.
	good := e.store.Leaf()

	garbage := func(*apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
		return &apiv1.CertifyResponse{Chain: [][]byte{[]byte("not a certificate")}}, nil
	}
	wrongID := func(req *apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
		csr, _, err := pki.ParseCSR(req.GetCertificateSigningRequest())
		if err != nil {
			return nil, err
		}
		other := identity.ID{TrustDomain: "cluster.local", Namespace: "books", ServiceAccount: "other"}
		leaf, err := e.srv.issuer.Sign(csr.PublicKey, other, time.Hour, time.Now())
		if err != nil {
			return nil, err
		}
		return &apiv1.CertifyResponse{Chain: e.srv.issuer.ChainDER(leaf)}, nil
	}
	unavailable := func(*apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
		return nil, status.Error(codes.Unavailable, "controller down")
	}
	tests := []struct {
		name string
		fail func(*apiv1.CertifyRequest) (*apiv1.CertifyResponse, error)
	}{
		{"server error", unavailable},
		{"garbage chain", garbage},
		{"certificate for another identity", wrongID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			cfg := e.config()
			cfg.Registerer = reg
			cfg.RenewFraction = 0.7
			e.srv.set(func(s *identityServer) { s.fail = tt.fail; s.failures = 0 })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, cfg) }()
			// Backoff retries: several failed calls, each counted.
			waitFor(t, "retries", 10*time.Second, func() bool {
				_, f := e.srv.counts()
				return f >= 4
			})
			waitFor(t, "error metric", 5*time.Second, func() bool {
				v, _ := metricValue(t, reg, "trellis_identity_certify_total", map[string]string{"result": "error"})
				return v >= 3
			})
			if v, _ := metricValue(t, reg, "trellis_control_plane_connected", map[string]string{"service": "identity"}); v != 0 {
				t.Errorf("control plane connected = %v during failures, want 0", v)
			}
			if !e.store.Ready() || !e.store.Leaf().Equal(good) {
				t.Fatal("a failed renewal dropped or replaced the good certificate")
			}
			// Recovery: the next retry succeeds and installs a new certificate.
			e.srv.set(func(s *identityServer) { s.fail = nil })
			waitFor(t, "recovery", 10*time.Second, func() bool { return !e.store.Leaf().Equal(good) })
			good = e.store.Leaf()
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
		})
	}
}

func TestTrustAnchorsFromResponse(t *testing.T) {
	e := newEnv(t, time.Hour)
	newRoot, _, err := pki.NewRoot("next root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle := []*x509.Certificate{e.srv.root, newRoot}
	e.srv.set(func(s *identityServer) { s.anchors = bundle })
	before := e.store.BundleFingerprint()
	e.start(t, e.config())
	waitFor(t, "first certificate", 10*time.Second, e.store.Ready)
	want := pki.Fingerprint(bundle)
	if got := e.store.BundleFingerprint(); got != want || got == before {
		t.Fatalf("bundle fingerprint = %s, want %s (before %s)", got, want, before)
	}
	waitFor(t, "bundle metric", 5*time.Second, func() bool {
		v, ok := metricValue(t, e.reg, "trellis_identity_trust_bundle_info", map[string]string{"fingerprint": want})
		_, old := metricValue(t, e.reg, "trellis_identity_trust_bundle_info", map[string]string{"fingerprint": before})
		return ok && v == 1 && !old
	})

	// A bundle that does not contain the issuer of the certificate is
	// refused: installing it would cut the proxy off the mesh.
	unrelated, _, err := pki.NewRoot("unrelated", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := e.config()
	cfg.Registerer = reg
	e.srv.set(func(s *identityServer) { s.anchors = []*x509.Certificate{unrelated}; s.failures = 0 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	waitFor(t, "refused bundle", 10*time.Second, func() bool {
		v, _ := metricValue(t, reg, "trellis_identity_certify_total", map[string]string{"result": "error"})
		return v >= 2
	})
	if got := e.store.BundleFingerprint(); got != want {
		t.Fatal("an inconsistent bundle replaced the trust anchors")
	}
	cancel()
	<-done
}

func TestMissingToken(t *testing.T) {
	e := newEnv(t, time.Hour)
	cfg := e.config()
	cfg.TokenFile = filepath.Join(t.TempDir(), "absent")
	e.start(t, cfg)
	waitFor(t, "errors counted", 10*time.Second, func() bool {
		v, _ := metricValue(t, e.reg, "trellis_identity_certify_total", map[string]string{"result": "error"})
		return v >= 2
	})
	if calls, _ := e.srv.counts(); calls != 0 {
		t.Fatalf("server called %d times without a token", calls)
	}
	if e.store.Ready() {
		t.Fatal("ready without a certificate")
	}
	// The token appears: the next retry reads it.
	if err := os.WriteFile(cfg.TokenFile, []byte("token-1"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "certificate", 10*time.Second, e.store.Ready)
}

func TestRunConfigErrors(t *testing.T) {
	e := newEnv(t, time.Hour)
	otherStore, err := meshtls.NewStore(identity.ID{TrustDomain: "cluster.local", Namespace: "x", ServiceAccount: "y"}, e.store.TrustAnchors())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(*Config)
	}{
		{"invalid identity", func(c *Config) { c.Identity = identity.ID{} }},
		{"no client", func(c *Config) { c.Client = nil }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no token file", func(c *Config) { c.TokenFile = "" }},
		{"store for another identity", func(c *Config) { c.Store = otherStore }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := e.config()
			tt.mutate(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := Run(ctx, cfg); err == nil || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Run = %v, want a configuration error", err)
			}
		})
	}
}

func TestRenewAt(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name                string
		notBefore, notAfter time.Time
		want                time.Time
	}{
		{"24h certificate", now.Add(-time.Minute), now.Add(24 * time.Hour), now.Add(-time.Minute).Add(time.Duration(0.7 * float64(24*time.Hour+time.Minute)))},
		{"fresh, not backdated", now, now.Add(10 * time.Second), now.Add(7 * time.Second)},
		{"backdated short-lived: 70% of what remains", now.Add(-time.Minute), now.Add(2 * time.Second), now.Add(1400 * time.Millisecond)},
		{"already expired: now", now.Add(-time.Hour), now.Add(-time.Second), now},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RenewAt(tt.notBefore, tt.notAfter, now, 0.7); !got.Equal(tt.want) {
				t.Fatalf("RenewAt = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestJittered(t *testing.T) {
	var lo, hi bool
	for range 1000 {
		d := jittered(time.Second)
		if d < 750*time.Millisecond || d > 1250*time.Millisecond {
			t.Fatalf("jittered(1s) = %v, outside ±25%%", d)
		}
		lo = lo || d < 900*time.Millisecond
		hi = hi || d > 1100*time.Millisecond
	}
	if !lo || !hi {
		t.Fatal("jitter does not spread")
	}
}
