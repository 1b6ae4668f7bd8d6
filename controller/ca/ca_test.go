package ca

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

var allFiles = []string{AnchorCertFile, AnchorKeyFile, IssuerCertFile, IssuerKeyFile}

func TestFirstRunAndReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	now := time.Now()
	c1, err := LoadOrCreate(dir, now, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %s, want 0700", st.Mode().Perm())
	}
	for _, n := range allFiles {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %s, want 0600", n, st.Mode().Perm())
		}
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		t.Errorf("state dir holds %d entries, want 4", len(ents))
	}
	anchor := c1.State().ChainAnchor
	if !anchor.IsCA || anchor.NotAfter.Sub(now) < 9*365*24*time.Hour {
		t.Errorf("anchor: CA=%v expiry %s", anchor.IsCA, anchor.NotAfter)
	}
	is := c1.State().Issuer
	if d := is.Cert.NotAfter.Sub(now); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("issuer lifetime %s, want about a year", d)
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, AnchorCertFile))
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(onDisk)
	if err != nil || len(certs) != 1 || !certs[0].Equal(anchor) {
		t.Fatalf("anchor.crt does not hold the anchor: %v", err)
	}

	c2, err := LoadOrCreate(dir, now.Add(time.Hour), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.State().ChainAnchor.Equal(anchor) || !c2.State().Issuer.Cert.Equal(is.Cert) {
		t.Fatal("second run did not load the same CA")
	}
	after, _ := os.ReadFile(filepath.Join(dir, AnchorCertFile))
	if !bytes.Equal(after, onDisk) {
		t.Fatal("second run rewrote anchor.crt")
	}
	// The loaded issuer signs certificates that verify against the anchor.
	key, _ := pki.GenerateKey()
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
	leaf, err := c2.State().Issuer.Sign(key.Public(), id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Verify(c2.State().Issuer.ChainDER(leaf), c1.State().Pool, x509.ExtKeyUsageClientAuth, id, now); err != nil {
		t.Fatal(err)
	}
}

func TestLooseDirTightened(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, time.Now(), Options{}); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(dir)
	if st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %s, want 0700", st.Mode().Perm())
	}
}

// otherCA makes a second, unrelated CA to take mismatching files from.
func otherCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := LoadOrCreate(dir, time.Now(), Options{}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// copyFromAs copies file name of dir src into the tested dir as as.
func copyFromAs(src, name, as string) func(t *testing.T, dir string) {
	return func(t *testing.T, dir string) {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, as), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRefusesBadState(t *testing.T) {
	other := otherCA(t)
	copyFrom := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(other, name))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	write := func(name, content string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   string
	}{
		{"missing issuer key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, IssuerKeyFile)) }, "missing [issuer.key]"},
		{"corrupt anchor", write(AnchorCertFile, "not a certificate"), "anchor.crt"},
		{"key in anchor.crt", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, AnchorKeyFile))
			write(AnchorCertFile, string(data))(t, dir)
		}, "anchor.crt"},
		{"corrupt issuer key", write(IssuerKeyFile, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "issuer.key"},
		{"anchor key mismatch", copyFrom(AnchorKeyFile), "anchor.key does not match"},
		{"issuer key mismatch", copyFrom(IssuerKeyFile), "issuer.key does not match"},
		{"issuer from another anchor", func(t *testing.T, dir string) {
			copyFrom(IssuerCertFile)(t, dir)
			copyFrom(IssuerKeyFile)(t, dir)
		}, "issuer.crt (\"CN=trellis-issuer\", issued by \"CN=trellis-anchor\") does not chain to any anchor of anchor.crt"},
		{"bundle without the issuer's anchor", copyFromAs(other, AnchorCertFile, BundleFile), "does not chain to any anchor of bundle.crt"},
		{"key in bundle.crt", copyFromAs(other, AnchorKeyFile, BundleFile), "bundle.crt: unexpected PEM block"},
		{"issuer key in issuer.crt", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, IssuerKeyFile))
			write(IssuerCertFile, string(data))(t, dir)
		}, "issuer.crt: unexpected PEM block"},
		{"leaf as issuer", func(t *testing.T, dir string) {
			c, err := LoadOrCreate(t.TempDir(), time.Now(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			key, _ := pki.GenerateKey()
			leaf, err := c.State().Issuer.Sign(key.Public(), identity.Controller("cluster.local"), time.Hour, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			k, _ := pki.EncodeKeyPEM(key)
			write(IssuerCertFile, string(pki.EncodeCertsPEM(leaf)))(t, dir)
			write(IssuerKeyFile, string(k))(t, dir)
		}, "is not a CA certificate"},
		{"issuer as anchor", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(dir, IssuerCertFile))
			write(AnchorCertFile, string(data))(t, dir)
			data, _ = os.ReadFile(filepath.Join(dir, IssuerKeyFile))
			write(AnchorKeyFile, string(data))(t, dir)
		}, "not a self-signed root"},
		{"two anchors", func(t *testing.T, dir string) {
			a, _ := os.ReadFile(filepath.Join(dir, AnchorCertFile))
			b, _ := os.ReadFile(filepath.Join(other, AnchorCertFile))
			write(AnchorCertFile, string(a)+string(b))(t, dir)
		}, "want exactly one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := LoadOrCreate(dir, time.Now(), Options{}); err != nil {
				t.Fatal(err)
			}
			tt.damage(t, dir)
			_, err := LoadOrCreate(dir, time.Now(), Options{})
			if err == nil {
				t.Fatalf("damaged state accepted, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestExpiredIssuerReplacedOnLoad(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	c1, err := LoadOrCreate(dir, start, Options{})
	if err != nil {
		t.Fatal(err)
	}
	later := start.Add(IssuerValidity + time.Hour)
	renew := Options{AutoRenewIssuer: true}

	// Without auto-renewal the expired issuer is loaded but cannot sign,
	// and the files are left alone.
	kept, err := LoadOrCreate(dir, later, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !kept.State().Issuer.Cert.Equal(c1.State().Issuer.Cert) {
		t.Fatal("issuer replaced without --auto-renew-issuer")
	}
	if err := kept.Check(later); !errors.Is(err, ErrIssuerNotValid) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("Check of an expired issuer: %v", err)
	}

	c2, err := LoadOrCreate(dir, later, renew)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.State().ChainAnchor.Equal(c1.State().ChainAnchor) {
		t.Fatal("anchor changed")
	}
	if c2.State().Issuer.Cert.Equal(c1.State().Issuer.Cert) || !c2.State().Issuer.Cert.NotAfter.After(later) {
		t.Fatal("expired issuer not replaced")
	}
	if err := c2.Check(later); err != nil {
		t.Fatal(err)
	}
	// The replacement is on disk: a third load keeps it.
	c3, err := LoadOrCreate(dir, later, renew)
	if err != nil {
		t.Fatal(err)
	}
	if !c3.State().Issuer.Cert.Equal(c2.State().Issuer.Cert) {
		t.Fatal("replacement issuer not persisted")
	}
	// An expired anchor is refused.
	if _, err := LoadOrCreate(dir, start.Add(AnchorValidity+time.Hour), renew); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired anchor: %v", err)
	}
}

func TestNoRenewalWithoutAnchorKey(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	c1, err := LoadOrCreate(dir, start, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, AnchorKeyFile)); err != nil {
		t.Fatal(err)
	}
	later := start.Add(IssuerValidity + time.Hour)
	c2, err := LoadOrCreate(dir, later, Options{AutoRenewIssuer: true})
	if err != nil {
		t.Fatal(err)
	}
	if !c2.State().Issuer.Cert.Equal(c1.State().Issuer.Cert) || c2.Check(later) == nil {
		t.Fatal("issuer renewed without anchor.key")
	}
}

func TestServingCert(t *testing.T) {
	c, err := LoadOrCreate(t.TempDir(), time.Now(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Controller("cluster.local")
	var expiry time.Time
	s, err := NewServingCert(c, id, time.Hour, nil, func(t time.Time) { expiry = t })
	if err != nil {
		t.Fatal(err)
	}
	cert, err := s.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if !expiry.Equal(cert.Leaf.NotAfter) {
		t.Fatalf("onIssue got %s, leaf expires %s", expiry, cert.Leaf.NotAfter)
	}
	if _, err := pki.Verify(cert.Certificate, c.State().Pool, x509.ExtKeyUsageServerAuth, id, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func TestRenewIfDueWhileRunning(t *testing.T) {
	start := time.Now()
	due := start.Add(IssuerValidity - IssuerRenewBefore + time.Hour) // inside the renewal window
	tests := []struct {
		name       string
		autoRenew  bool
		dropKey    bool
		at         time.Time
		wantRenew  bool
		wantReload int
	}{
		{name: "due", autoRenew: true, at: due, wantRenew: true, wantReload: 1},
		{name: "not due", autoRenew: true, at: start.Add(time.Hour)},
		{name: "auto-renew off", at: due},
		{name: "no anchor key", autoRenew: true, dropKey: true, at: due},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			reloads := 0
			c, err := LoadOrCreate(dir, start, Options{AutoRenewIssuer: tt.autoRenew, OnReload: func(err error) {
				if err == nil {
					reloads++
				}
			}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.dropKey {
				if err := os.Remove(filepath.Join(dir, AnchorKeyFile)); err != nil {
					t.Fatal(err)
				}
			}
			before := c.State()
			if err := c.RenewIfDue(tt.at); err != nil {
				t.Fatal(err)
			}
			after := c.State()
			renewed := !after.Issuer.Cert.Equal(before.Issuer.Cert)
			if renewed != tt.wantRenew || reloads != tt.wantReload {
				t.Fatalf("renewed %v with %d reloads, want %v with %d", renewed, reloads, tt.wantRenew, tt.wantReload)
			}
			if !renewed {
				return
			}
			// The new issuer is signed by the same anchor, valid a full
			// lifetime from the renewal, and on disk for the next start.
			if !after.ChainAnchor.Equal(before.ChainAnchor) || after.Fingerprint != before.Fingerprint {
				t.Fatal("anchor or bundle changed")
			}
			if err := after.Issuer.Cert.CheckSignatureFrom(before.ChainAnchor); err != nil {
				t.Fatal(err)
			}
			if !after.Issuer.Cert.NotAfter.After(tt.at.Add(IssuerValidity - time.Hour)) {
				t.Fatalf("new issuer expires %s", after.Issuer.Cert.NotAfter)
			}
			reopened, err := LoadOrCreate(dir, tt.at, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !reopened.State().Issuer.Cert.Equal(after.Issuer.Cert) {
				t.Fatal("renewed issuer not persisted")
			}
			// Running again right after is a no-op.
			if err := c.RenewIfDue(tt.at); err != nil || !c.State().Issuer.Cert.Equal(after.Issuer.Cert) {
				t.Fatalf("second renewal: %v", err)
			}
		})
	}
}
