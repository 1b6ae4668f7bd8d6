package identitycmd

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// run executes `identity ARGS` with the clock at now and returns stdout,
// stderr and the error.
func run(t *testing.T, now time.Time, stdin []byte, args ...string) (string, string, error) {
	t.Helper()
	cmd := newCommand(func() time.Time { return now })
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(bytes.NewReader(stdin))
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func mustRun(t *testing.T, now time.Time, args ...string) string {
	t.Helper()
	out, errOut, err := run(t, now, nil, args...)
	if err != nil {
		t.Fatalf("identity %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// newCA writes anchor.crt/key and issuer.crt/key/ca.crt into dir through
// the commands themselves, with the clock at now.
func newCA(t *testing.T, dir string, now time.Time, issuerValidity string) {
	t.Helper()
	mustRun(t, now, "create-anchor", "--out-dir", dir)
	mustRun(t, now, "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"), "--anchor-key", filepath.Join(dir, "anchor.key"),
		"--out-dir", dir, "--validity", issuerValidity)
}

func fileCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCertsPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func fp(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func TestCreateWritesPrivateFilesAndAWorkingCA(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	newCA(t, dir, now, "8760h")
	for _, n := range []string{"anchor.crt", "anchor.key", "issuer.crt", "issuer.key", "ca.crt"} {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", n, st.Mode().Perm())
		}
	}
	anchor, issuer := fileCerts(t, filepath.Join(dir, "anchor.crt"))[0], fileCerts(t, filepath.Join(dir, "issuer.crt"))[0]
	if !bytes.Equal(fileCerts(t, filepath.Join(dir, "ca.crt"))[0].Raw, anchor.Raw) {
		t.Error("ca.crt is not the anchor")
	}
	// The issuer signs a workload certificate that verifies against the
	// anchor, for its trust domain only.
	keyData, err := os.ReadFile(filepath.Join(dir, "issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKeyPEM(keyData)
	if err != nil {
		t.Fatal(err)
	}
	is := &pki.Issuer{Cert: issuer, Key: key}
	pool := x509.NewCertPool()
	pool.AddCert(anchor)
	wk, _ := pki.GenerateKey()
	for _, tt := range []struct {
		td string
		ok bool
	}{{"cluster.local", true}, {"other.domain", false}} {
		leaf, err := is.Sign(wk.Public(), identity.ID{TrustDomain: tt.td, Namespace: "ns", ServiceAccount: "sa"}, 24*time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		_, err = pki.VerifyCerts([]*x509.Certificate{leaf, issuer}, pool, x509.ExtKeyUsageClientAuth, identity.ID{}, now)
		if (err == nil) != tt.ok {
			t.Errorf("workload in %s: verify err %v, want ok=%v", tt.td, err, tt.ok)
		}
	}

	// Refuse to overwrite, both commands, and change nothing.
	before, _ := os.ReadFile(filepath.Join(dir, "anchor.key"))
	if _, _, err := run(t, now, nil, "create-anchor", "--out-dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("create-anchor over existing files: err = %v", err)
	}
	if _, _, err := run(t, now, nil, "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"), "--anchor-key", filepath.Join(dir, "anchor.key"), "--out-dir", dir); err == nil {
		t.Fatal("create-issuer overwrote existing files")
	}
	after, _ := os.ReadFile(filepath.Join(dir, "anchor.key"))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused create-anchor changed anchor.key")
	}
	mustRun(t, now, "create-anchor", "--out-dir", dir, "--force")
	if after, _ := os.ReadFile(filepath.Join(dir, "anchor.key")); bytes.Equal(before, after) {
		t.Fatal("--force did not replace anchor.key")
	}
}

func TestVerify(t *testing.T) {
	now := time.Now()
	good, other, expired, soon := t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	newCA(t, good, now, "8760h")
	newCA(t, other, now, "8760h")
	newCA(t, expired, now.Add(-72*time.Hour), "1h") // made three days ago, valid one hour
	newCA(t, soon, now, "48h")
	p := filepath.Join
	// A bundle of both anchors accepts the good issuer.
	both := p(t.TempDir(), "both.crt")
	mustRun(t, now, "bundle", "add", "--bundle", both, p(other, "anchor.crt"), p(good, "anchor.crt"))
	tests := []struct {
		name     string
		args     []string
		wantErr  error
		wantWarn bool
	}{
		{"ok", []string{"--bundle", p(good, "ca.crt"), "--issuer", p(good, "issuer.crt"), "--issuer-key", p(good, "issuer.key")}, nil, false},
		{"ok in a bundle of two, without key", []string{"--bundle", both, "--issuer", p(good, "issuer.crt")}, nil, false},
		{"issuer of another anchor", []string{"--bundle", p(other, "ca.crt"), "--issuer", p(good, "issuer.crt"), "--issuer-key", p(good, "issuer.key")}, pki.ErrIssuerUntrusted, false},
		{"expired issuer", []string{"--bundle", p(expired, "ca.crt"), "--issuer", p(expired, "issuer.crt"), "--issuer-key", p(expired, "issuer.key")}, pki.ErrIssuerExpired, false},
		{"mismatched key", []string{"--bundle", p(good, "ca.crt"), "--issuer", p(good, "issuer.crt"), "--issuer-key", p(other, "issuer.key")}, pki.ErrKeyMismatch, false},
		{"anchor given as issuer's key", []string{"--bundle", p(good, "ca.crt"), "--issuer", p(good, "issuer.crt"), "--issuer-key", p(good, "anchor.key")}, pki.ErrKeyMismatch, false},
		{"expires within 7 days", []string{"--bundle", p(soon, "ca.crt"), "--issuer", p(soon, "issuer.crt"), "--issuer-key", p(soon, "issuer.key")}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, err := run(t, now, nil, append([]string{"verify"}, tt.args...)...)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.HasPrefix(out, "OK:") {
				t.Fatalf("err = %v, out = %s", err, out)
			}
			if got := strings.Contains(errOut, "WARNING"); got != tt.wantWarn {
				t.Fatalf("warning = %v, want %v: %s", got, tt.wantWarn, errOut)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	newCA(t, dir, now.Add(-3*time.Hour), "8760h") // old enough to have signed an expired workload
	anchor := fileCerts(t, filepath.Join(dir, "anchor.crt"))[0]
	issuer := fileCerts(t, filepath.Join(dir, "issuer.crt"))[0]

	// A workload certificate with a SPIFFE ID, and an expired one.
	keyData, _ := os.ReadFile(filepath.Join(dir, "issuer.key"))
	key, err := pki.ParseKeyPEM(keyData)
	if err != nil {
		t.Fatal(err)
	}
	wk, _ := pki.GenerateKey()
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "books", ServiceAccount: "books-v1"}
	leaf, err := (&pki.Issuer{Cert: issuer, Key: key}).Sign(wk.Public(), id, time.Hour, now.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "chain.pem")
	if err := os.WriteFile(chain, pki.EncodeCertsPEM(leaf, issuer, anchor), 0o600); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	mustRun(t, now, "create-anchor", "--out-dir", other)
	otherAnchor := fileCerts(t, filepath.Join(other, "anchor.crt"))[0]
	bundle := filepath.Join(dir, "bundle.crt")
	mustRun(t, now, "bundle", "add", "--bundle", bundle, filepath.Join(dir, "anchor.crt"), filepath.Join(other, "anchor.crt"))
	secretYAML, _, err := run(t, now, nil, "create-issuer", "--anchor-cert", filepath.Join(dir, "anchor.crt"), "--anchor-key", filepath.Join(dir, "anchor.key"), "-o", "secret")
	if err != nil {
		t.Fatal(err)
	}
	secretJSON, err := yaml.YAMLToJSON([]byte(secretYAML))
	if err != nil {
		t.Fatal(err)
	}
	// The certificates in the Secret, read with a generic decoder.
	var generic struct {
		Data map[string][]byte `json:"data"`
	}
	if err := json.Unmarshal(secretJSON, &generic); err != nil {
		t.Fatal(err)
	}
	secretIssuer, err := pki.ParseCertsPEM(generic.Data["tls.crt"])
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		cert     *x509.Certificate
		role     string
		signedBy string
		spiffe   string
		expired  bool
	}
	tests := []struct {
		name  string
		args  []string
		stdin []byte
		want  []want
	}{
		{"chain with an expired workload", []string{chain}, nil, []want{
			{leaf, "workload", fp(issuer), id.String(), true},
			{issuer, "issuer", fp(anchor), "spiffe://cluster.local", false},
			{anchor, "anchor", "self", "", false},
		}},
		{"bundle", []string{bundle}, nil, []want{
			{anchor, "anchor", "self", "", false},
			{otherAnchor, "anchor", "self", "", false},
		}},
		{"issuer alone: signer unknown", []string{filepath.Join(dir, "issuer.crt")}, nil, []want{
			{issuer, "issuer", "", "spiffe://cluster.local", false},
		}},
		{"secret YAML on stdin", []string{"-"}, []byte(secretYAML), []want{
			{secretIssuer[0], "issuer", fp(anchor), "spiffe://cluster.local", false},
			{anchor, "anchor", "self", "", false},
		}},
		{"secret JSON on stdin", []string{"-"}, secretJSON, []want{
			{secretIssuer[0], "issuer", fp(anchor), "spiffe://cluster.local", false},
			{anchor, "anchor", "self", "", false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := run(t, now, tt.stdin, append([]string{"inspect", "-o", "json"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var rep inspectReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Certificates) != len(tt.want) {
				t.Fatalf("%d certificates, want %d", len(rep.Certificates), len(tt.want))
			}
			for i, w := range tt.want {
				got := rep.Certificates[i]
				if got.Fingerprint != fp(w.cert) || got.Subject != w.cert.Subject.String() || got.Issuer != w.cert.Issuer.String() ||
					got.Serial != w.cert.SerialNumber.Text(16) || !got.NotAfter.Equal(w.cert.NotAfter) || got.IsCA != w.cert.IsCA {
					t.Errorf("cert %d: %+v does not describe %s", i, got, w.cert.Subject)
				}
				if got.Role != w.role || got.SignedBy != w.signedBy || got.SPIFFEID != w.spiffe || got.Expired != w.expired || got.KeyType != "ECDSA P-256" {
					t.Errorf("cert %d: role %q signedBy %q spiffe %q expired %v key %q; want %+v", i, got.Role, got.SignedBy, got.SPIFFEID, got.Expired, got.KeyType, w)
				}
			}
			// The text form says the same, with the SPIFFE ID and EXPIRED visible.
			text, _, err := run(t, now, tt.stdin, append([]string{"inspect"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(text, fp(w.cert)) || (w.spiffe != "" && !strings.Contains(text, ">> "+w.spiffe+" <<")) || (w.expired && !strings.Contains(text, "EXPIRED")) {
					t.Errorf("text output lacks details of %s:\n%s", w.cert.Subject, text)
				}
			}
		})
	}
	if _, _, err := run(t, now, []byte("kind: ConfigMap\n"), "inspect", "-"); err == nil {
		t.Error("a ConfigMap was accepted")
	}
	if _, _, err := run(t, now, nil, "inspect", filepath.Join(dir, "issuer.key")); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("a key file: err = %v", err)
	}
}

func TestBundleCommands(t *testing.T) {
	now := time.Now()
	a, b := t.TempDir(), t.TempDir()
	newCA(t, a, now, "8760h")
	mustRun(t, now, "create-anchor", "--out-dir", b)
	aCert, bCert := fileCerts(t, filepath.Join(a, "anchor.crt"))[0], fileCerts(t, filepath.Join(b, "anchor.crt"))[0]
	bundle := filepath.Join(t.TempDir(), "bundle.crt")
	steps := []struct {
		name    string
		args    []string
		want    []*x509.Certificate // bundle afterwards
		wantErr string
	}{
		{"add first", []string{"add", a + "/anchor.crt"}, []*x509.Certificate{aCert}, ""},
		{"add again is a no-op", []string{"add", a + "/anchor.crt"}, []*x509.Certificate{aCert}, ""},
		{"add second twice in one call", []string{"add", b + "/anchor.crt", b + "/anchor.crt"}, []*x509.Certificate{aCert, bCert}, ""},
		{"add a copy under another name", []string{"add", a + "/ca.crt"}, []*x509.Certificate{aCert, bCert}, ""},
		{"add a non-CA refused", []string{"add", "LEAF"}, []*x509.Certificate{aCert, bCert}, "not a CA"},
		{"remove by file", []string{"remove", a + "/anchor.crt"}, []*x509.Certificate{bCert}, ""},
		{"remove the last refused", []string{"remove", b + "/anchor.crt"}, []*x509.Certificate{bCert}, "refusing"},
		{"add back", []string{"add", a + "/anchor.crt"}, []*x509.Certificate{bCert, aCert}, ""},
		{"remove by fingerprint prefix", []string{"remove", fp(bCert)[:12]}, []*x509.Certificate{aCert}, ""},
		{"remove unknown fingerprint", []string{"remove", "00000000"}, []*x509.Certificate{aCert}, "no anchor"},
	}
	// A workload certificate for the non-CA case.
	keyData, _ := os.ReadFile(filepath.Join(a, "issuer.key"))
	key, _ := pki.ParseKeyPEM(keyData)
	wk, _ := pki.GenerateKey()
	leaf, err := (&pki.Issuer{Cert: fileCerts(t, filepath.Join(a, "issuer.crt"))[0], Key: key}).Sign(wk.Public(),
		identity.ID{TrustDomain: "cluster.local", Namespace: "a", ServiceAccount: "b"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	leafPath := filepath.Join(t.TempDir(), "leaf.crt")
	if err := os.WriteFile(leafPath, pki.EncodeCertsPEM(leaf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		for i, arg := range s.args {
			if arg == "LEAF" {
				s.args[i] = leafPath
			}
		}
		args := append([]string{"bundle", s.args[0], "--bundle", bundle}, s.args[1:]...)
		_, _, err := run(t, now, nil, args...)
		if s.wantErr == "" && err != nil || s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Fatalf("%s: err = %v, want %q", s.name, err, s.wantErr)
		}
		got := fileCerts(t, bundle)
		if pki.Fingerprint(got) != pki.Fingerprint(s.want) {
			t.Fatalf("%s: bundle holds %d certs, want %d", s.name, len(got), len(s.want))
		}
	}
	out := mustRun(t, now, "bundle", "list", "--bundle", bundle)
	if !strings.Contains(out, fp(aCert)) || strings.Contains(out, fp(bCert)) || !strings.Contains(out, pki.Fingerprint([]*x509.Certificate{aCert})) {
		t.Errorf("list:\n%s", out)
	}
	if _, _, err := run(t, now, nil, "bundle", "list", "--bundle", filepath.Join(t.TempDir(), "missing.crt")); err == nil {
		t.Error("list of a missing bundle succeeded")
	}
}
