package certifier

import (
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/syncbuf"
)

// testAnchors are two roots and a workload certificate (not a CA).
type testAnchors struct {
	a, b   *x509.Certificate
	leaf   *x509.Certificate
	keyPEM []byte
}

func newTestAnchors(t *testing.T) testAnchors {
	t.Helper()
	now := time.Now()
	a, aKey, err := pki.NewRoot("anchor A", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := pki.NewRoot("anchor B", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := pki.NewIssuer(a, aKey, "issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := issuer.Sign(key.Public(), workloadID, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	return testAnchors{a: a, b: b, leaf: leaf, keyPEM: keyPEM}
}

func cacheErrors(t *testing.T, reg *prometheus.Registry, op string) float64 {
	t.Helper()
	v, ok := metricValue(t, reg, "trellis_identity_trust_anchors_cache_errors_total", map[string]string{"op": op})
	if !ok {
		t.Fatalf("trellis_identity_trust_anchors_cache_errors_total{op=%q} not exported", op)
	}
	return v
}

func TestAnchorsCacheLoad(t *testing.T) {
	ta := newTestAnchors(t)
	certPEM := pki.EncodeCertsPEM(ta.a)
	tests := []struct {
		name     string
		content  []byte // written to the file; nil: no file
		dir      bool   // the path is a directory
		want     []*x509.Certificate
		notExist bool
		wantErr  string // substring; "" with want set: success
	}{
		{name: "missing file", notExist: true},
		{name: "valid bundle keeps its order", content: pki.EncodeCertsPEM(ta.b, ta.a), want: []*x509.Certificate{ta.b, ta.a}},
		{name: "empty file", content: []byte{}, wantErr: "empty"},
		{name: "not PEM", content: []byte("garbage\x00\x01"), wantErr: "no PEM certificates"},
		{name: "truncated certificate", content: certPEM[:len(certPEM)/2], wantErr: "no PEM certificates"},
		{name: "corrupt DER", content: []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), wantErr: "parse certificate"},
		{name: "a private key", content: append(append([]byte{}, certPEM...), ta.keyPEM...), wantErr: `unexpected PEM block "PRIVATE KEY"`},
		{name: "not a CA certificate", content: pki.EncodeCertsPEM(ta.a, ta.leaf), wantErr: "not a CA certificate"},
		{name: "too large", content: append(append([]byte{}, certPEM...), make([]byte, maxAnchorsCacheBytes)...), wantErr: "larger than"},
		{name: "a directory", dir: true, wantErr: "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "trust-anchors.pem")
			switch {
			case tt.dir:
				if err := os.Mkdir(path, 0o755); err != nil {
					t.Fatal(err)
				}
			case tt.content != nil:
				if err := os.WriteFile(path, tt.content, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			reg := prometheus.NewRegistry()
			c, err := NewAnchorsCache(path, reg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.Load()
			switch {
			case tt.notExist:
				if !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("Load = %v, want fs.ErrNotExist", err)
				}
				if n := cacheErrors(t, reg, CacheOpRead); n != 0 {
					t.Errorf("a missing cache (first start) counted as %v read errors", n)
				}
			case tt.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load = %d anchors, %v; want an error with %q", len(got), err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), path) {
					t.Errorf("error %q does not name the file", err)
				}
				if n := cacheErrors(t, reg, CacheOpRead); n != 1 {
					t.Errorf("read errors = %v, want 1", n)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tt.want) {
					t.Fatalf("Load = %d anchors, want %d", len(got), len(tt.want))
				}
				for i := range got {
					if !got[i].Equal(tt.want[i]) {
						t.Errorf("anchor %d is %q, want %q", i, got[i].Subject.CommonName, tt.want[i].Subject.CommonName)
					}
				}
			}
			if n := cacheErrors(t, reg, CacheOpWrite); n != 0 {
				t.Errorf("Load counted %v write errors", n)
			}
		})
	}
}

func TestAnchorsCacheSave(t *testing.T) {
	ta := newTestAnchors(t)
	readOnly := func(t *testing.T) string {
		if os.Geteuid() == 0 {
			// Root ignores directory permissions; sysfs refuses new
			// files to everyone.
			if st, err := os.Stat("/sys"); err != nil || !st.IsDir() {
				t.Skip("running as root without /sys: no directory root cannot write to")
			}
			return "/sys/trust-anchors.pem"
		}
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(dir, 0o755) })
		return filepath.Join(dir, "trust-anchors.pem")
	}
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		anchors []*x509.Certificate
		wantErr string
	}{
		{name: "new file", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "trust-anchors.pem") }, anchors: []*x509.Certificate{ta.a, ta.b}},
		{name: "replaces a corrupt file", path: func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "trust-anchors.pem")
			if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, anchors: []*x509.Certificate{ta.b}},
		{name: "read-only directory", path: readOnly, anchors: []*x509.Certificate{ta.a}, wantErr: "permission denied"},
		{name: "directory missing", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "absent", "trust-anchors.pem") }, anchors: []*x509.Certificate{ta.a}, wantErr: "no such file"},
		{name: "parent is a file", path: func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(p, "trust-anchors.pem")
		}, anchors: []*x509.Certificate{ta.a}, wantErr: "not a directory"},
		{name: "no anchors", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "trust-anchors.pem") }, wantErr: "no anchors"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(t)
			reg := prometheus.NewRegistry()
			c, err := NewAnchorsCache(path, reg)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Save(tt.anchors)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Save = %v, want an error with %q", err, tt.wantErr)
				}
				if n := cacheErrors(t, reg, CacheOpWrite); n != 1 {
					t.Errorf("write errors = %v, want 1", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o644 {
				t.Errorf("mode %v, want 0644", st.Mode().Perm())
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Count(string(data), "BEGIN CERTIFICATE") != len(tt.anchors) || strings.Contains(string(data), "KEY-----") {
				t.Errorf("file holds more than the %d anchors (or a key):\n%s", len(tt.anchors), data)
			}
			got, err := c.Load()
			if err != nil {
				t.Fatal(err)
			}
			if pki.Fingerprint(got) != pki.Fingerprint(tt.anchors) {
				t.Error("Load after Save returned another bundle")
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("temporary files left beside the cache: %v", entries)
			}
			if cacheErrors(t, reg, CacheOpWrite)+cacheErrors(t, reg, CacheOpRead) != 0 {
				t.Error("errors counted on success")
			}
		})
	}
}

func TestBootstrapAnchors(t *testing.T) {
	ta := newTestAnchors(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bootstrap := write("bootstrap.pem", pki.EncodeCertsPEM(ta.a))
	learned := write("learned.pem", pki.EncodeCertsPEM(ta.b))
	corrupt := write("corrupt.pem", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	leafOnly := write("leaf.pem", pki.EncodeCertsPEM(ta.leaf))
	absent := filepath.Join(dir, "absent.pem")
	learnedFP, bootstrapFP := pki.Fingerprint([]*x509.Certificate{ta.b}), pki.Fingerprint([]*x509.Certificate{ta.a})

	tests := []struct {
		name         string
		bootstrap    string
		cache        string // "": no cache configured
		wantFile     string
		wantFP       string
		wantReadErrs float64
		wantLog      []string
		wantErr      string
	}{
		{name: "no cache configured", bootstrap: bootstrap, wantFile: bootstrap, wantFP: bootstrapFP,
			wantLog: []string{"trust anchors from --trust-anchors", bootstrapFP}},
		{name: "cache not written yet", bootstrap: bootstrap, cache: absent, wantFile: bootstrap, wantFP: bootstrapFP,
			wantLog: []string{"no trust anchors cached yet", "trust anchors from --trust-anchors"}},
		{name: "cache used instead of the bootstrap file", bootstrap: bootstrap, cache: learned, wantFile: learned, wantFP: learnedFP,
			wantLog: []string{"level=INFO", "trust anchors from the cache", "file=" + learned, "fingerprint=" + learnedFP, "instead_of=" + bootstrap}},
		{name: "cache used although the bootstrap file is gone", bootstrap: absent, cache: learned, wantFile: learned, wantFP: learnedFP},
		{name: "corrupt cache falls back", bootstrap: bootstrap, cache: corrupt, wantFile: bootstrap, wantFP: bootstrapFP, wantReadErrs: 1,
			wantLog: []string{"level=WARN", "trust anchors cache unusable", "parse certificate", "trust anchors from --trust-anchors"}},
		{name: "cache of a non-CA certificate falls back", bootstrap: bootstrap, cache: leafOnly, wantFile: bootstrap, wantFP: bootstrapFP, wantReadErrs: 1,
			wantLog: []string{"level=WARN", "not a CA certificate"}},
		{name: "no cache, no bootstrap file", bootstrap: absent, cache: absent, wantErr: "--trust-anchors: open"},
		{name: "corrupt cache, corrupt bootstrap file", bootstrap: corrupt, cache: corrupt, wantErr: "--trust-anchors " + corrupt, wantReadErrs: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			reg := prometheus.NewRegistry()
			var cache *AnchorsCache
			if tt.cache != "" {
				var err error
				if cache, err = NewAnchorsCache(tt.cache, reg); err != nil {
					t.Fatal(err)
				}
			}
			anchors, file, err := BootstrapAnchors(tt.bootstrap, cache, log)
			if cache != nil {
				if n := cacheErrors(t, reg, CacheOpRead); n != tt.wantReadErrs {
					t.Errorf("read errors = %v, want %v", n, tt.wantReadErrs)
				}
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("BootstrapAnchors = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if file != tt.wantFile || pki.Fingerprint(anchors) != tt.wantFP {
				t.Errorf("anchors from %s (%s), want %s (%s)", file, pki.Fingerprint(anchors)[:12], tt.wantFile, tt.wantFP[:12])
			}
			for _, w := range tt.wantLog {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("log lacks %q:\n%s", w, logs.String())
				}
			}
		})
	}
}

// TestCertifierWritesAnchorsCache: the certifier writes the bundle after
// its first Certify and again whenever the control plane sends another;
// a cache it cannot write costs a warning and a count, never the
// certificate.
//
// Certificates live an hour and are renewed every ~0.4 s (a tiny
// RenewFraction): with a 1 s lifetime, which x509 truncates to the second,
// a certificate issued at .99 s arrived expired on a loaded machine and its
// Certify failed for that reason, not the cache (the old flake).
func TestCertifierWritesAnchorsCache(t *testing.T) {
	e := newEnv(t, time.Hour)
	path := filepath.Join(t.TempDir(), "trust-anchors.pem")
	cache, err := NewAnchorsCache(path, e.reg)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncbuf.Buffer
	cfg := e.config()
	cfg.AnchorsCache = cache
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.MinRenewPeriod = 50 * time.Millisecond
	cfg.RenewFraction = 0.0001 // of 1 h: a renewal every ~0.36 s
	// The first response carries no bundle: the one in use (the
	// bootstrap's) is written all the same.
	e.start(t, cfg)
	waitFor(t, "first certificate", 10*time.Second, e.store.Ready)
	cached := func() string {
		anchors, err := readAnchors(path)
		if err != nil {
			return err.Error()
		}
		return pki.Fingerprint(anchors)
	}
	first := e.store.BundleFingerprint()
	waitFor(t, "the bootstrap bundle cached", 5*time.Second, func() bool { return cached() == first })

	// add-anchor: the control plane sends A+B; the cache follows.
	next, _, err := pki.NewRoot("next root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bundle := []*x509.Certificate{e.srv.root, next}
	e.srv.set(func(s *identityServer) { s.anchors = bundle })
	waitFor(t, "the new bundle cached", 10*time.Second, func() bool { return cached() == pki.Fingerprint(bundle) })
	if got := e.store.BundleFingerprint(); got != pki.Fingerprint(bundle) {
		t.Fatalf("store bundle %s, want the new one", got)
	}

	// The cache directory disappears: renewals go on, each bundle change
	// that cannot be written is counted and logged.
	leafBefore := e.store.Leaf()
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	e.srv.set(func(s *identityServer) { s.anchors = []*x509.Certificate{e.srv.root} })
	waitFor(t, "a write error counted", 10*time.Second, func() bool { return cacheErrors(t, e.reg, CacheOpWrite) >= 1 })
	before, _ := metricValue(t, e.reg, "trellis_identity_certify_total", map[string]string{"result": "ok"})
	waitFor(t, "renewals after the write failure", 10*time.Second, func() bool {
		v, _ := metricValue(t, e.reg, "trellis_identity_certify_total", map[string]string{"result": "ok"})
		return v >= before+2
	})
	if e.store.Leaf() == nil || e.store.Leaf().Equal(leafBefore) {
		t.Fatal("no certificate installed after the cache write failed")
	}
	if got := e.store.BundleFingerprint(); got != pki.Fingerprint([]*x509.Certificate{e.srv.root}) {
		t.Errorf("the bundle was not installed because the cache could not be written")
	}
	if v, _ := metricValue(t, e.reg, "trellis_identity_certify_total", map[string]string{"result": "error"}); v != 0 {
		t.Errorf("a cache write failure counted as %v failed Certify calls\n%s", v, logs.String())
	}
	if !strings.Contains(logs.String(), "level=WARN msg=\"cannot cache the trust anchors") {
		t.Errorf("no warning for the failed write:\n%s", logs.String())
	}
	// Back: the next renewal writes the bundle in use.
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the cache written again", 10*time.Second, func() bool { return cached() == e.store.BundleFingerprint() })
	if n := cacheErrors(t, e.reg, CacheOpRead); n != 0 {
		t.Errorf("read errors = %v, want 0", n)
	}
}
