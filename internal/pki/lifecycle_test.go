package pki

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// lcRootAndIssuer makes an anchor and an issuer as of now.
func lcRootAndIssuer(t testing.TB, now time.Time, issuerValidity time.Duration) (*x509.Certificate, *Issuer) {
	t.Helper()
	root, key, err := NewRoot("lc root", 400*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := NewIssuer(root, key, "lc issuer", issuerValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	return root, is
}

func TestCheckIssuer(t *testing.T) {
	now := time.Now()
	root, is := lcRootAndIssuer(t, now, 365*24*time.Hour)
	otherRoot, otherIs := lcRootAndIssuer(t, now, 365*24*time.Hour)
	expRoot, expIs := lcRootAndIssuer(t, now.Add(-72*time.Hour), time.Hour)
	soonRoot, soonIs := lcRootAndIssuer(t, now, 48*time.Hour)

	tests := []struct {
		name     string
		issuer   *x509.Certificate
		key      crypto.Signer
		anchors  []*x509.Certificate
		wantErr  error
		warnings int
	}{
		{"ok with key", is.Cert, is.Key, []*x509.Certificate{root}, nil, 0},
		{"ok without key", is.Cert, nil, []*x509.Certificate{root}, nil, 0},
		{"ok in a two-anchor bundle", is.Cert, is.Key, []*x509.Certificate{otherRoot, root}, nil, 0},
		{"other anchor", is.Cert, is.Key, []*x509.Certificate{otherRoot}, ErrIssuerUntrusted, 0},
		{"empty bundle", is.Cert, is.Key, nil, ErrIssuerUntrusted, 0},
		{"expired", expIs.Cert, expIs.Key, []*x509.Certificate{expRoot}, ErrIssuerExpired, 0},
		{"key of another issuer", is.Cert, otherIs.Key, []*x509.Certificate{root}, ErrKeyMismatch, 0},
		{"an anchor not in the bundle", root, nil, []*x509.Certificate{otherRoot}, ErrIssuerUntrusted, 0},
		{"expires within 7 days", soonIs.Cert, soonIs.Key, []*x509.Certificate{soonRoot}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := CheckIssuer(tt.issuer, tt.key, tt.anchors, now)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if res.Anchor == nil || tt.issuer.CheckSignatureFrom(res.Anchor) != nil {
				t.Fatalf("reported anchor %v did not sign the issuer", res.Anchor)
			}
			if len(res.Warnings) != tt.warnings {
				t.Fatalf("warnings = %q, want %d", res.Warnings, tt.warnings)
			}
		})
	}
}

func TestTrustDomainIssuerConstrainsIdentities(t *testing.T) {
	now := time.Now()
	root, rootKey, err := NewRoot("td root", 24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := NewTrustDomainIssuer(root, rootKey, "td issuer", "cluster.local", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewTrustDomainIssuer(root, rootKey, "bad", "Not_A_Domain", time.Hour, now); err == nil {
		t.Fatal("invalid trust domain accepted")
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	for _, tt := range []struct {
		id string
		ok bool
	}{
		{"spiffe://cluster.local/ns/a/sa/b", true},
		{"spiffe://evil.example/ns/a/sa/b", false},
	} {
		id, err := identity.Parse(tt.id)
		if err != nil {
			t.Fatal(err)
		}
		k, err := GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := is.Sign(k.Public(), id, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		_, err = VerifyCerts([]*x509.Certificate{leaf, is.Cert}, pool, x509.ExtKeyUsageServerAuth, identity.ID{}, now)
		if (err == nil) != tt.ok {
			t.Errorf("%s: verify err = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

func TestBundleEditing(t *testing.T) {
	now := time.Now()
	a, _ := lcRootAndIssuer(t, now, time.Hour)
	b, _ := lcRootAndIssuer(t, now, time.Hour)
	c, _ := lcRootAndIssuer(t, now, time.Hour)
	tests := []struct {
		name      string
		bundle    []*x509.Certificate
		add       []*x509.Certificate
		remove    []*x509.Certificate
		want      []*x509.Certificate
		wantCount int
	}{
		{"add to empty", nil, []*x509.Certificate{a}, nil, []*x509.Certificate{a}, 1},
		{"add duplicate", []*x509.Certificate{a}, []*x509.Certificate{a}, nil, []*x509.Certificate{a}, 0},
		{"add twice in one call", []*x509.Certificate{a}, []*x509.Certificate{b, b}, nil, []*x509.Certificate{a, b}, 1},
		{"duplicates in the bundle collapse", []*x509.Certificate{a, a}, []*x509.Certificate{c}, nil, []*x509.Certificate{a, c}, 1},
		{"remove present", []*x509.Certificate{a, b, c}, nil, []*x509.Certificate{b}, []*x509.Certificate{a, c}, 1},
		{"remove absent", []*x509.Certificate{a}, nil, []*x509.Certificate{b}, []*x509.Certificate{a}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []*x509.Certificate
			var n int
			if tt.remove != nil {
				got, n = RemoveFromBundle(tt.bundle, tt.remove)
			} else {
				got, n = AddToBundle(tt.bundle, tt.add)
			}
			if n != tt.wantCount {
				t.Errorf("count = %d, want %d", n, tt.wantCount)
			}
			if Fingerprint(got) != Fingerprint(tt.want) || len(got) != len(tt.want) {
				t.Errorf("got %d certs (%s), want %d (%s)", len(got), Fingerprint(got), len(tt.want), Fingerprint(tt.want))
			}
		})
	}
	// A one-anchor bundle's fingerprint is that anchor's fingerprint, as
	// computed independently from its DER.
	sum := sha256.Sum256(a.Raw)
	if got := CertFingerprint(a); got != hex.EncodeToString(sum[:]) || Fingerprint([]*x509.Certificate{a}) != got {
		t.Errorf("fingerprints disagree: %s", got)
	}
}

func TestSecretRoundTripAndDescribe(t *testing.T) {
	now := time.Now()
	root, is := lcRootAndIssuer(t, now, time.Hour)
	keyPEM, err := EncodeKeyPEM(is.Key)
	if err != nil {
		t.Fatal(err)
	}
	manifest, err := TLSSecret{Name: "iss", Namespace: "trellis-system", Cert: EncodeCertsPEM(is.Cert), Key: keyPEM, CA: EncodeCertsPEM(root)}.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := yaml.YAMLToJSON(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"yaml": manifest, "json": asJSON} {
		t.Run(name, func(t *testing.T) {
			// The manifest is a real core/v1 Secret: check its shape with a
			// generic decoder, not with the type that wrote it.
			var generic map[string]any
			if err := yaml.Unmarshal(data, &generic); err != nil {
				t.Fatal(err)
			}
			if generic["type"] != "kubernetes.io/tls" || generic["kind"] != "Secret" || generic["apiVersion"] != "v1" {
				t.Fatalf("manifest shape: %v", generic)
			}
			srcs, err := ParseCertInput(data)
			if err != nil {
				t.Fatal(err)
			}
			if len(srcs) != 2 || !strings.HasSuffix(srcs[0].Name, "tls.crt") || !strings.HasSuffix(srcs[1].Name, "ca.crt") {
				t.Fatalf("sources: %+v", srcs)
			}
			all := append(srcs[0].Certs, srcs[1].Certs...)
			infos := Describe(all, now)
			if infos[0].Role != "issuer" || infos[1].Role != "anchor" {
				t.Errorf("roles %s, %s", infos[0].Role, infos[1].Role)
			}
			if infos[0].SignedBy != CertFingerprint(root) || infos[1].SignedBy != "self" {
				t.Errorf("signed by %q, %q", infos[0].SignedBy, infos[1].SignedBy)
			}
			if infos[0].Serial != is.Cert.SerialNumber.Text(16) || infos[0].Subject != is.Cert.Subject.String() {
				t.Errorf("issuer info %+v", infos[0])
			}
			s, err := ParseTLSSecret(data)
			if err != nil {
				t.Fatal(err)
			}
			k, err := ParseKeyPEM(s.Key)
			if err != nil || KeyMatchesCert(k, is.Cert) != nil {
				t.Fatalf("tls.key does not round-trip: %v", err)
			}
		})
	}
}

func TestParseCertInputRejects(t *testing.T) {
	now := time.Now()
	_, is := lcRootAndIssuer(t, now, time.Hour)
	keyPEM, _ := EncodeKeyPEM(is.Key)
	for name, in := range map[string]string{
		"empty":            "  \n",
		"garbage":          "hello: [",
		"not a secret":     "kind: ConfigMap\ndata: {}\n",
		"secret w/o certs": "kind: Secret\nmetadata: {name: x}\ndata: {tls.key: " + "aGk=" + "}\n",
		"bad base64":       "kind: Secret\nmetadata: {name: x}\ndata: {tls.crt: '***'}\n",
		"key in PEM":       string(keyPEM),
		"not PEM in data":  "kind: Secret\nmetadata: {name: x}\nstringData: {tls.crt: nope}\n",
		"huge":             strings.Repeat("a", MaxInputLength+1),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseCertInput([]byte(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func FuzzParseCertInput(f *testing.F) {
	now := time.Now()
	root, is := lcRootAndIssuer(f, now, time.Hour)
	keyPEM, _ := EncodeKeyPEM(is.Key)
	manifest, _ := TLSSecret{Name: "n", Namespace: "ns", Cert: EncodeCertsPEM(is.Cert), Key: keyPEM, CA: EncodeCertsPEM(root)}.Manifest()
	asJSON, _ := yaml.YAMLToJSON(manifest)
	f.Add(manifest)
	f.Add(asJSON)
	f.Add(EncodeCertsPEM(is.Cert, root))
	f.Add([]byte("kind: Secret\nstringData: {ca.crt: x}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, err := ParseCertInput(data)
		if err != nil {
			return
		}
		for _, s := range srcs {
			if len(s.Certs) == 0 {
				t.Fatal("source without certificates")
			}
			infos := Describe(s.Certs, now)
			if _, err := json.Marshal(infos); err != nil {
				t.Fatal(err)
			}
		}
		_, _ = ParseTLSSecret(data)
	})
}
