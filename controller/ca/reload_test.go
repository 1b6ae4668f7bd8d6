package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// root is a test anchor with its key.
type root struct {
	cert *x509.Certificate
	is   func(t *testing.T, validity time.Duration, now time.Time) *pki.Issuer
}

func newRoot(t *testing.T, cn string) root {
	t.Helper()
	c, k, err := pki.NewRoot(cn, 48*time.Hour, time.Now().Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return root{cert: c, is: func(t *testing.T, validity time.Duration, now time.Time) *pki.Issuer {
		t.Helper()
		is, err := pki.NewIssuer(c, k, cn+"-issuer", validity, now)
		if err != nil {
			t.Fatal(err)
		}
		return is
	}}
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := pki.WriteFileAtomic(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func keyPEM(t *testing.T, is *pki.Issuer) []byte {
	t.Helper()
	k, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// recorder counts OnReload calls.
type recorder struct {
	mu      sync.Mutex
	ok, bad int
}

func (r *recorder) onReload(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad++
	} else {
		r.ok++
	}
}

func (r *recorder) counts() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.bad
}

// reload calls Reload as Run does: invalid content is read a second time
// before it is refused.
func reload(c *CA, now time.Time) error {
	err := c.Reload(now)
	if errors.Is(err, errSettling) {
		err = c.Reload(now)
	}
	return err
}

func TestReloadStateDir(t *testing.T) {
	a, b := newRoot(t, "anchor-a"), newRoot(t, "anchor-b")
	now := time.Now()
	tests := []struct {
		name string
		// change writes into dir, where anchor a and an issuer of a are.
		change  func(t *testing.T, dir string) (wantIssuer *x509.Certificate)
		refused string // "" when the change must be installed
		anchors int
	}{
		{"new issuer, same anchor", func(t *testing.T, dir string) *x509.Certificate {
			is := a.is(t, time.Hour, now)
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, is))
			writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
			return is.Cert
		}, "", 1},
		{"bundle of two anchors, issuer of the new one", func(t *testing.T, dir string) *x509.Certificate {
			writeFile(t, filepath.Join(dir, BundleFile), pki.EncodeCertsPEM(a.cert, b.cert))
			is := b.is(t, time.Hour, now)
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, is))
			writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
			return is.Cert
		}, "", 2},
		{"bundle only", func(t *testing.T, dir string) *x509.Certificate {
			writeFile(t, filepath.Join(dir, BundleFile), pki.EncodeCertsPEM(b.cert, a.cert))
			return nil
		}, "", 2},
		{"mismatched key", func(t *testing.T, dir string) *x509.Certificate {
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, a.is(t, time.Hour, now)))
			return nil
		}, "issuer.key does not match", 1},
		{"issuer of an anchor not in the bundle", func(t *testing.T, dir string) *x509.Certificate {
			is := b.is(t, time.Hour, now)
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, is))
			writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
			return nil
		}, "does not chain to any anchor of anchor.crt", 1},
		{"old anchor removed from the bundle too early", func(t *testing.T, dir string) *x509.Certificate {
			writeFile(t, filepath.Join(dir, BundleFile), pki.EncodeCertsPEM(b.cert))
			return nil
		}, "does not chain to any anchor of bundle.crt", 1},
		{"expired issuer", func(t *testing.T, dir string) *x509.Certificate {
			is := a.is(t, time.Minute, now.Add(-time.Hour))
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, is))
			writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
			return nil
		}, "cannot sign now", 1},
		{"garbage certificate", func(t *testing.T, dir string) *x509.Certificate {
			writeFile(t, filepath.Join(dir, IssuerCertFile), []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
			return nil
		}, "issuer.crt", 1},
		{"issuer removed", func(t *testing.T, dir string) *x509.Certificate {
			os.Remove(filepath.Join(dir, IssuerCertFile))
			return nil
		}, "no such file", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			first := a.is(t, time.Hour, now)
			writeFile(t, filepath.Join(dir, AnchorCertFile), pki.EncodeCertsPEM(a.cert))
			writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, first))
			writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(first.Cert))
			var rec recorder
			var installs []*State
			c, err := LoadOrCreate(dir, now, Options{OnReload: rec.onReload, OnInstall: func(s *State) { installs = append(installs, s) }})
			if err != nil {
				t.Fatal(err)
			}
			before, changed := c.Current()
			if len(installs) != 1 || installs[0] != before {
				t.Fatalf("OnInstall not called with the first State")
			}
			want := tt.change(t, dir)
			err = reload(c, now)
			after := c.State()
			if tt.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("reload: %v, want refusal containing %q", err, tt.refused)
				}
				if after != before {
					t.Fatal("refused files replaced the State")
				}
				if ok, bad := rec.counts(); ok != 0 || bad != 1 {
					t.Fatalf("OnReload ok=%d error=%d, want one error", ok, bad)
				}
				// Reported once, not on every poll.
				if err := c.Reload(now); err != nil {
					t.Fatalf("second reload of the same refused files: %v", err)
				}
				if _, bad := rec.counts(); bad != 1 {
					t.Fatal("refusal reported twice")
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-changed:
				default:
					t.Fatal("changed channel not closed")
				}
				if ok, bad := rec.counts(); ok != 1 || bad != 0 {
					t.Fatalf("OnReload ok=%d error=%d, want one ok", ok, bad)
				}
				if len(installs) != 2 || installs[1] != after {
					t.Fatal("OnInstall not called with the new State")
				}
			}
			if want != nil && !after.Issuer.Cert.Equal(want) {
				t.Fatal("new issuer not installed")
			}
			if len(after.AnchorsDER) != tt.anchors {
				t.Fatalf("%d anchors, want %d", len(after.AnchorsDER), tt.anchors)
			}
			// Whatever happened, the State in use signs certificates that
			// verify against its own bundle.
			key, _ := pki.GenerateKey()
			id := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
			leaf, err := after.Issuer.Sign(key.Public(), id, time.Minute, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pki.Verify(after.Issuer.ChainDER(leaf), after.Pool, x509.ExtKeyUsageClientAuth, id, time.Now()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestKeyThenCertNotReported: a writer replacing issuer.key then issuer.crt
// is seen mid-way by a reload; the mismatch is not reported as a refusal.
func TestKeyThenCertNotReported(t *testing.T) {
	dir := t.TempDir()
	var rec recorder
	c, err := LoadOrCreate(dir, time.Now(), Options{OnReload: rec.onReload})
	if err != nil {
		t.Fatal(err)
	}
	anchor, anchorKey := mustAnchor(t, dir)
	is, err := pki.NewIssuer(anchor, anchorKey, "next-issuer", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, IssuerKeyFile), keyPEM(t, is))
	if err := c.Reload(time.Now()); !errors.Is(err, errSettling) {
		t.Fatalf("mid-write reload: %v, want settling", err)
	}
	writeFile(t, filepath.Join(dir, IssuerCertFile), pki.EncodeCertsPEM(is.Cert))
	if err := c.Reload(time.Now()); err != nil {
		t.Fatal(err)
	}
	if ok, bad := rec.counts(); ok != 1 || bad != 0 {
		t.Fatalf("OnReload ok=%d error=%d, want one ok", ok, bad)
	}
	if !c.State().Issuer.Cert.Equal(is.Cert) {
		t.Fatal("new issuer not installed")
	}
}

func mustAnchor(t *testing.T, dir string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	certs, err := pki.ParseCertsPEM(mustRead(t, filepath.Join(dir, AnchorCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	k, err := pki.ParseKeyPEM(mustRead(t, filepath.Join(dir, AnchorKeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	return certs[0], k
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// secretDir lays out a kubernetes.io/tls Secret volume as the kubelet does:
// the files live in a timestamped directory, `..data` points to it, and
// each visible name is a symlink through `..data`.
type secretDir struct {
	dir string
	gen int
}

func newSecretDir(t *testing.T, is *pki.Issuer, bundle ...*x509.Certificate) *secretDir {
	t.Helper()
	s := &secretDir{dir: t.TempDir()}
	s.update(t, is, bundle...)
	for _, n := range []string{SecretCertFile, SecretKeyFile, SecretCAFile} {
		if err := os.Symlink(filepath.Join("..data", n), filepath.Join(s.dir, n)); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// update writes a new generation and swaps `..data` to it atomically, then
// removes the old generation, like the kubelet's AtomicWriter.
func (s *secretDir) update(t *testing.T, is *pki.Issuer, bundle ...*x509.Certificate) {
	t.Helper()
	s.gen++
	gen := filepath.Join(s.dir, "..2026_01_01_00_00_0"+string(rune('0'+s.gen)))
	if err := os.Mkdir(gen, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		SecretCertFile: pki.EncodeCertsPEM(append([]*x509.Certificate{is.Cert}, is.Chain...)...),
		SecretKeyFile:  keyPEM(t, is),
		SecretCAFile:   pki.EncodeCertsPEM(bundle...),
	}
	for n, data := range files {
		// Secret volumes are 0644 by default; the controller must not try
		// to chmod them (the mount is read-only).
		if err := os.WriteFile(filepath.Join(gen, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(s.dir, "..data"))
	tmp := filepath.Join(s.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
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

func TestIssuerDirSymlinkSwap(t *testing.T) {
	a, b := newRoot(t, "anchor-a"), newRoot(t, "anchor-b")
	// An issuer with an intermediate between it and the anchor, as external
	// CAs often have.
	mid := a.is(t, time.Hour, time.Now())
	leafCA, err := pki.NewIssuer(mid.Cert, mid.Key, "leaf-ca", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leafCA.Chain = []*x509.Certificate{mid.Cert}
	sd := newSecretDir(t, leafCA, a.cert)

	var rec recorder
	c, err := OpenIssuerDir(sd.dir, time.Now(), Options{OnReload: rec.onReload})
	if err != nil {
		t.Fatal(err)
	}
	st, changed := c.Current()
	if !st.Issuer.Cert.Equal(leafCA.Cert) || len(st.Issuer.Chain) != 1 || !st.Issuer.Chain[0].Equal(mid.Cert) {
		t.Fatal("issuer or its intermediate not loaded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	next := b.is(t, time.Hour, time.Now())
	sd.update(t, next, a.cert, b.cert)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("symlink swap not picked up within 10s")
	}
	st = c.State()
	if !st.Issuer.Cert.Equal(next.Cert) || len(st.Anchors) != 2 || len(st.Issuer.Chain) != 0 {
		t.Fatalf("after the swap: issuer %s, %d anchors, %d intermediates", st.Issuer.Cert.Subject, len(st.Anchors), len(st.Issuer.Chain))
	}
	if ok, bad := rec.counts(); ok != 1 || bad != 0 {
		t.Fatalf("OnReload ok=%d error=%d", ok, bad)
	}
	// Files of a Secret volume are never chmod-ed.
	fi, err := os.Stat(filepath.Join(sd.dir, SecretKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Fatalf("tls.key mode changed to %s", fi.Mode().Perm())
	}
}

func TestIssuerDirRefusesBadSecret(t *testing.T) {
	a, b := newRoot(t, "anchor-a"), newRoot(t, "anchor-b")
	sd := newSecretDir(t, a.is(t, time.Hour, time.Now()), b.cert)
	_, err := OpenIssuerDir(sd.dir, time.Now(), Options{})
	if err == nil || !strings.Contains(err.Error(), "does not chain to any anchor of ca.crt") {
		t.Fatalf("issuer of an anchor missing from ca.crt: %v", err)
	}
	if _, err := OpenIssuerDir(t.TempDir(), time.Now(), Options{}); err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Fatalf("empty dir: %v", err)
	}
}
