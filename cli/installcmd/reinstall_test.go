package installcmd

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop() // the API server the re-install tests may have started
	os.Exit(code)
}

// offline is a kubeconfig-less machine: no cluster to look at.
func offline() (kubernetes.Interface, error) {
	return nil, clientcmd.ErrEmptyConfig
}

func execute(t *testing.T, now func() time.Time, k *kubeFlags, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	// The flag, not the field: registering --kubeconfig resets the field.
	if k.kubeconfig != "" {
		args = append([]string{"--kubeconfig", k.kubeconfig}, args...)
	}
	var kf kubeFlags
	cmd := newInstall(now, &kf, kf.clientset)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// identityIn returns the issuer Secret's data and the anchors ConfigMap's
// bundle as a manifest prints them.
func identityIn(t *testing.T, out string) (map[string][]byte, string) {
	t.Helper()
	objs := objects(t, out)
	s := secret(t, objs, install.IssuerSecretName)
	for _, o := range objs {
		if o.Kind.Kind == "ConfigMap" && o.Name == install.TrustAnchorsName {
			data, _ := o.Content["data"].(map[string]any)
			b, _ := data[install.TrustAnchorsKey].(string)
			return s.Data, b
		}
	}
	t.Fatal("no trust-anchors ConfigMap")
	return nil, ""
}

// TestReinstallKeepsIdentity installs into a real API server, then runs
// install again (--ha, then with --set) and requires the issuer Secret and
// the anchors ConfigMap byte for byte, in the output and in the cluster
// after applying it; supplied files that drop the anchor are refused;
// --new-identity renders the add-anchor stage.
func TestReinstallKeepsIdentity(t *testing.T) {
	path := apiservertest.Kubeconfig(t)
	k := &kubeFlags{kubeconfig: path}
	cs, err := k.clientset()
	if err != nil {
		t.Fatal(err)
	}
	dc, err := k.dynamic()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if ex, err := install.DetectExisting(ctx, cs); err != nil || ex != nil {
		t.Skipf("the API server already holds a Trellis install (%v): this test installs its own", err)
	}
	t.Cleanup(func() { uninstallAll(t, dc) })

	first, stderr, err := execute(t, time.Now, k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "no Trellis install in the cluster") {
		t.Errorf("first install: stderr %q does not say it generated a new identity", stderr)
	}
	applyOut(ctx, t, dc, first)
	wantSecret, wantBundle := identityIn(t, first)

	for _, args := range [][]string{{"--ha"}, {"--set", "controller.logLevel=debug"}, nil} {
		out, stderr, err := execute(t, time.Now, k, args...)
		if err != nil {
			t.Fatalf("install %v: %v", args, err)
		}
		if !strings.Contains(stderr, "already runs Trellis: keeping its trust anchors") {
			t.Errorf("install %v: stderr %q does not say it kept the identity", args, stderr)
		}
		gotSecret, gotBundle := identityIn(t, out)
		if gotBundle != wantBundle || !mapsEqual(gotSecret, wantSecret) {
			t.Fatalf("install %v rendered another identity", args)
		}
		applyOut(ctx, t, dc, out)
		sec, err := cs.CoreV1().Secrets(install.Namespace).Get(ctx, install.IssuerSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm, err := cs.CoreV1().ConfigMaps(install.Namespace).Get(ctx, install.TrustAnchorsName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !mapsEqual(sec.Data, wantSecret) || cm.Data[install.TrustAnchorsKey] != wantBundle {
			t.Fatalf("after applying install %v the cluster's issuer or anchors changed", args)
		}
		t.Logf("install %v over the install kept the anchor and issuer byte for byte", args)
	}

	// Files of another anchor would break every connection: refused.
	dir := t.TempDir()
	writeMaterial(t, dir)
	f := func(n string) string { return filepath.Join(dir, n) }
	_, _, err = execute(t, time.Now, k, "--identity-trust-anchors", f("ca.crt"), "--identity-issuer-cert", f("issuer.crt"), "--identity-issuer-key", f("issuer.key"))
	if err == nil || !strings.Contains(err.Error(), "drop the installed anchor") || !strings.Contains(err.Error(), "--new-identity") {
		t.Errorf("foreign identity over an install: %v", err)
	}

	// --new-identity: the add-anchor stage, issuer unchanged.
	if _, _, err := execute(t, time.Now, k, "--new-identity"); err == nil || !strings.Contains(err.Error(), "--anchor-dir") {
		t.Errorf("--new-identity without --anchor-dir: %v", err)
	}
	anchorDir := filepath.Join(t.TempDir(), "anchor")
	out, stderr, err := execute(t, time.Now, k, "--new-identity", "--anchor-dir", anchorDir)
	if err != nil {
		t.Fatal(err)
	}
	gotSecret, gotBundle := identityIn(t, out)
	next, err := pki.ParseCertsPEM(mustRead(t, filepath.Join(anchorDir, nextAnchorCertFile)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gotBundle, wantBundle) || !strings.Contains(gotBundle, string(pki.EncodeCertsPEM(next...))) {
		t.Error("--new-identity: the bundle is not the installed anchors plus the new one")
	}
	if !bytes.Equal(gotSecret["tls.key"], wantSecret["tls.key"]) || !bytes.Equal(gotSecret["tls.crt"], wantSecret["tls.crt"]) {
		t.Error("--new-identity replaced the issuer in its first stage")
	}
	if st, err := os.Stat(filepath.Join(anchorDir, nextAnchorKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new anchor key: %v %v", st, err)
	}
	if !strings.Contains(stderr, "--stage switch-issuer") {
		t.Errorf("--new-identity does not say the next stage: %q", stderr)
	}
	if _, _, err := execute(t, time.Now, k, "--new-identity", "--anchor-dir", anchorDir); err == nil || !strings.Contains(err.Error(), "already pending") {
		t.Errorf("a second --new-identity over a pending one: %v", err)
	}
}

// TestInstallWithoutCluster: an unreachable API server or no kubeconfig
// renders a new identity and says so on stderr.
func TestInstallWithoutCluster(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kubeconfig")
	// A port nothing listens on (1 is privileged and never open here).
	kc := "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: x}\n"
	if err := os.WriteFile(cfg, []byte(kc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := execute(t, time.Now, &kubeFlags{kubeconfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "could not be reached") || !strings.Contains(stderr, "trellis upgrade") {
		t.Errorf("unreachable cluster: stderr %q", stderr)
	}
	identityIn(t, out)

	cmd := newInstall(time.Now, &kubeFlags{}, offline)
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SetArgs(nil)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(e.String(), "no kubeconfig found") {
		t.Errorf("no kubeconfig: stderr %q", e.String())
	}
}

func applyOut(ctx context.Context, t *testing.T, dc dynamic.Interface, out string) {
	t.Helper()
	objs := objects(t, out)
	if err := install.Apply(ctx, dc, &install.Manifest{Objects: objs}); err != nil {
		t.Fatal(err)
	}
}

func uninstallAll(t *testing.T, dc dynamic.Interface) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	found, err := install.FindInstalled(ctx, dc)
	if err == nil {
		err = install.Delete(ctx, dc, found)
	}
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(b[k], v) {
			return false
		}
	}
	return true
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
