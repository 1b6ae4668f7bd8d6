package pki

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

type testCA struct {
	root   *x509.Certificate
	issuer *Issuer
	pool   *x509.CertPool
}

func newTestCA(t testing.TB, now time.Time) testCA {
	t.Helper()
	root, rootKey, err := NewRoot("test root", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := NewIssuer(root, rootKey, "test issuer", 12*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return testCA{root: root, issuer: is, pool: pool}
}

func mustID(t *testing.T, s string) identity.ID {
	t.Helper()
	id, err := identity.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIssueAndVerify(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	other := newTestCA(t, now)
	web := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	books := mustID(t, "spiffe://cluster.local/ns/demo/sa/books")

	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrDER, err := NewCSR(key, web)
	if err != nil {
		t.Fatal(err)
	}
	csr, got, err := ParseCSR(csrDER)
	if err != nil || got != web {
		t.Fatalf("ParseCSR = %v, %v", got, err)
	}
	leaf, err := ca.issuer.Sign(csr.PublicKey, got, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	chain := ca.issuer.ChainDER(leaf)

	tests := []struct {
		name    string
		roots   *x509.CertPool
		want    identity.ID
		at      time.Time
		usage   x509.ExtKeyUsage
		chain   [][]byte
		wantErr error
	}{
		{name: "exact identity", roots: ca.pool, want: web, at: now, usage: x509.ExtKeyUsageServerAuth, chain: chain},
		{name: "any identity as client", roots: ca.pool, at: now, usage: x509.ExtKeyUsageClientAuth, chain: chain},
		{name: "wrong identity", roots: ca.pool, want: books, at: now, usage: x509.ExtKeyUsageServerAuth, chain: chain, wantErr: ErrWrongIdentity},
		{name: "untrusted anchor", roots: other.pool, want: web, at: now, usage: x509.ExtKeyUsageServerAuth, chain: chain, wantErr: ErrUntrusted},
		{name: "expired", roots: ca.pool, want: web, at: now.Add(2 * time.Hour), usage: x509.ExtKeyUsageServerAuth, chain: chain, wantErr: ErrExpired},
		{name: "missing intermediate", roots: ca.pool, want: web, at: now, usage: x509.ExtKeyUsageServerAuth, chain: chain[:1], wantErr: ErrUntrusted},
		{name: "no certificate", roots: ca.pool, want: web, at: now, usage: x509.ExtKeyUsageServerAuth, wantErr: ErrNoCertificate},
		{name: "garbage", roots: ca.pool, want: web, at: now, usage: x509.ExtKeyUsageServerAuth, chain: [][]byte{[]byte("nope")}, wantErr: ErrUntrusted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Verify(tt.chain, tt.roots, tt.usage, tt.want, tt.at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || id != web {
				t.Fatalf("Verify = %v, %v; want %v", id, err, web)
			}
		})
	}
}

// rsaCSR is a CSR of a 2048-bit RSA key: refused before its signature is
// checked (a hostile RSA key would set the cost of that check).
func rsaCSR(t *testing.T, u *url.URL) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestParseCSRRejects(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/demo/sa/web")
	bad, _ := url.Parse("https://example.com/x")
	mk := func(tmpl *x509.CertificateRequest) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	good := mk(&x509.CertificateRequest{URIs: []*url.URL{u}})
	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff
	tests := []struct {
		name string
		der  []byte
	}{
		{"extra dns SAN", mk(&x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: []string{"evil.example"}})},
		{"two URIs", mk(&x509.CertificateRequest{URIs: []*url.URL{u, u}})},
		{"no URI", mk(&x509.CertificateRequest{})},
		{"not spiffe", mk(&x509.CertificateRequest{URIs: []*url.URL{bad}})},
		{"bad signature", tampered},
		{"garbage", []byte("not a csr")},
		{"SHA-384 signature", mk(&x509.CertificateRequest{URIs: []*url.URL{u}, SignatureAlgorithm: x509.ECDSAWithSHA384})},
		{"RSA key", rsaCSR(t, u)},
		{"larger than MaxCSRBytes", append(append([]byte(nil), good...), make([]byte, MaxCSRBytes)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, id, err := ParseCSR(tt.der); err == nil {
				t.Fatalf("ParseCSR accepted %s", id)
			}
		})
	}
	if _, _, err := ParseCSR(good); err != nil {
		t.Fatalf("good CSR refused: %v", err)
	}
}

func TestExpiredIssuerRefuses(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	key, _ := GenerateKey()
	id := mustID(t, "spiffe://cluster.local/ns/demo/sa/web")
	if _, err := ca.issuer.Sign(key.Public(), id, time.Hour, now.Add(13*time.Hour)); err == nil {
		t.Fatal("expired issuer signed")
	}
	// The lifetime never outlives the issuer.
	leaf, err := ca.issuer.Sign(key.Public(), id, 48*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(ca.issuer.Cert.NotAfter) {
		t.Fatalf("leaf expires %v after issuer %v", leaf.NotAfter, ca.issuer.Cert.NotAfter)
	}
}

func TestPEMRoundTripAndAtomicWrite(t *testing.T) {
	now := time.Now()
	ca := newTestCA(t, now)
	dir := t.TempDir()
	path := filepath.Join(dir, "issuer.key")
	keyPEM, err := EncodeKeyPEM(ca.issuer.Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v err %v, want 0600", st.Mode(), err)
	}
	data, _ := os.ReadFile(path)
	if _, err := ParseKeyPEM(data); err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCertsPEM(EncodeCertsPEM(ca.root, ca.issuer.Cert))
	if err != nil || len(certs) != 2 || !certs[1].Equal(ca.issuer.Cert) {
		t.Fatalf("ParseCertsPEM = %d certs, %v", len(certs), err)
	}
	if _, err := ParseCertsPEM(keyPEM); err == nil {
		t.Fatal("a key was accepted as a certificate bundle")
	}
	if Fingerprint(certs) == Fingerprint(certs[:1]) {
		t.Fatal("fingerprint ignores certificates")
	}
}

func FuzzParseCSR(f *testing.F) {
	key, _ := GenerateKey()
	good, _ := NewCSR(key, identity.ID{TrustDomain: "cluster.local", Namespace: "a", ServiceAccount: "b"})
	f.Add(good)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		csr, id, err := ParseCSR(der)
		if err == nil && (csr == nil || id.Validate() != nil) {
			t.Fatalf("accepted invalid CSR: %v", id)
		}
	})
}

func FuzzParseCertsPEM(f *testing.F) {
	ca := newTestCA(f, time.Now())
	f.Add(EncodeCertsPEM(ca.root))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = ParseCertsPEM(data)
		_, _ = ParseKeyPEM(data)
	})
}
