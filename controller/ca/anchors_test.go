package ca

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// configMapDir lays out a ConfigMap volume holding one trust bundle file as
// the kubelet does (files under a generation directory, `..data` swapped
// atomically, the visible name a symlink through it).
type configMapDir struct {
	dir string
	gen int
}

const testBundleFile = "ca-bundle.crt"

func newConfigMapDir(t *testing.T, anchors ...*x509.Certificate) *configMapDir {
	t.Helper()
	d := &configMapDir{dir: t.TempDir()}
	d.update(t, anchors...)
	if err := os.Symlink(filepath.Join("..data", testBundleFile), filepath.Join(d.dir, testBundleFile)); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *configMapDir) path() string { return filepath.Join(d.dir, testBundleFile) }

func (d *configMapDir) update(t *testing.T, anchors ...*x509.Certificate) {
	t.Helper()
	d.gen++
	gen := filepath.Join(d.dir, "..2026_02_02_00_00_0"+string(rune('0'+d.gen)))
	if err := os.Mkdir(gen, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gen, testBundleFile), pki.EncodeCertsPEM(anchors...), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(d.dir, "..data"))
	tmp := filepath.Join(d.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(d.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(d.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func anchorsEqual(got, want []*x509.Certificate) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			return false
		}
	}
	return true
}

// TestTrustAnchorsFile runs an anchor rotation as with an external CA that
// rewrites ca.crt with the issuer's CA alone: the bundle comes from the
// anchors file, each of the two sources reloads on its own, and an issuer
// the bundle does not trust is refused while the previous state serves.
func TestTrustAnchorsFile(t *testing.T) {
	a, b, c := newRoot(t, "anchor-a"), newRoot(t, "anchor-b"), newRoot(t, "anchor-c")
	isA := a.is(t, time.Hour, time.Now())
	sd := newSecretDir(t, isA, a.cert)
	cm := newConfigMapDir(t, a.cert)

	var rec recorder
	authority, err := OpenIssuerDir(sd.dir, time.Now(), Options{OnReload: rec.onReload, TrustAnchorsFile: cm.path()})
	if err != nil {
		t.Fatal(err)
	}
	if got := authority.BundlePath(); got != cm.path() {
		t.Fatalf("BundlePath %s, want %s", got, cm.path())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); authority.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// waitInstalled waits for the next installed State.
	waitInstalled := func(changed <-chan struct{}, what string) *State {
		t.Helper()
		select {
		case <-changed:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not picked up within 10s", what)
		}
		return authority.State()
	}

	// The bundle alone: add anchor b.
	_, changed := authority.Current()
	cm.update(t, a.cert, b.cert)
	st := waitInstalled(changed, "bundle change")
	if !anchorsEqual(st.Anchors, []*x509.Certificate{a.cert, b.cert}) || !st.Issuer.Cert.Equal(isA.Cert) {
		t.Fatalf("after adding an anchor: %d anchors, issuer %s", len(st.Anchors), st.Issuer.Cert.Subject)
	}

	// The issuer alone, as cert-manager writes it: ca.crt holds only the
	// new issuer's CA, and is not the bundle.
	_, changed = authority.Current()
	isB := b.is(t, time.Hour, time.Now())
	sd.update(t, isB, b.cert)
	st = waitInstalled(changed, "issuer change")
	if !st.Issuer.Cert.Equal(isB.Cert) || !anchorsEqual(st.Anchors, []*x509.Certificate{a.cert, b.cert}) {
		t.Fatalf("after switching the issuer: issuer %s, %d anchors (ca.crt must not be the bundle)", st.Issuer.Cert.Subject, len(st.Anchors))
	}
	if ok, bad := rec.counts(); ok != 2 || bad != 0 {
		t.Fatalf("OnReload ok=%d error=%d, want 2 and 0", ok, bad)
	}

	// An issuer of an anchor missing from the bundle is refused.
	_, changed = authority.Current()
	isC := c.is(t, time.Hour, time.Now())
	sd.update(t, isC, c.cert)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, bad := rec.counts(); bad == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an issuer not trusted by the anchors file was not refused within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-changed:
		t.Fatal("a refused issuer was installed")
	default:
	}
	if st := authority.State(); !st.Issuer.Cert.Equal(isB.Cert) || len(st.Anchors) != 2 {
		t.Fatalf("after the refusal: issuer %s, %d anchors; want the previous state", st.Issuer.Cert.Subject, len(st.Anchors))
	}

	// Trusting its anchor installs it; then the old anchors go.
	cm.update(t, a.cert, b.cert, c.cert)
	st = waitInstalled(changed, "bundle trusting the refused issuer")
	if !st.Issuer.Cert.Equal(isC.Cert) || len(st.Anchors) != 3 {
		t.Fatalf("after adding its anchor: issuer %s, %d anchors", st.Issuer.Cert.Subject, len(st.Anchors))
	}
	_, changed = authority.Current()
	cm.update(t, c.cert)
	st = waitInstalled(changed, "removal of the old anchors")
	if !anchorsEqual(st.Anchors, []*x509.Certificate{c.cert}) || !anchorsEqual(pool(t, st.AnchorsDER), []*x509.Certificate{c.cert}) {
		t.Fatalf("after removing the old anchors: %d anchors", len(st.Anchors))
	}
	if ok, bad := rec.counts(); ok != 4 || bad != 1 {
		t.Fatalf("OnReload ok=%d error=%d, want 4 and 1", ok, bad)
	}
}

func pool(t *testing.T, der [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range der {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

func TestTrustAnchorsFileRefusedAtStart(t *testing.T) {
	a, b := newRoot(t, "anchor-a"), newRoot(t, "anchor-b")
	// ca.crt trusts the issuer, the anchors file does not: the file wins.
	sd := newSecretDir(t, a.is(t, time.Hour, time.Now()), a.cert)
	cm := newConfigMapDir(t, b.cert)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"issuer not trusted", cm.path(), "does not chain to any anchor of " + cm.path()},
		{"missing file", filepath.Join(cm.dir, "absent.crt"), "trust anchors file"},
		{"not certificates", filepath.Join(sd.dir, SecretKeyFile), SecretKeyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenIssuerDir(sd.dir, time.Now(), Options{TrustAnchorsFile: tc.file})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := OpenIssuerDir(sd.dir, time.Now(), Options{TrustAnchorsFile: cm.path()}); err == nil || !strings.Contains(err.Error(), "add-anchor") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
}
