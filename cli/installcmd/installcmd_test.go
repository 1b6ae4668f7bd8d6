package installcmd

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func run(t *testing.T, cmd *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func objects(t *testing.T, out string) []install.Object {
	t.Helper()
	objs, err := install.ParseDocuments([]byte(out), "output")
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func secret(t *testing.T, objs []install.Object, name string) *corev1.Secret {
	t.Helper()
	for _, o := range objs {
		if o.Kind.Kind == "Secret" && o.Name == name {
			var s corev1.Secret
			if err := yaml.UnmarshalStrict(o.YAML, &s); err != nil {
				t.Fatal(err)
			}
			return &s
		}
	}
	t.Fatalf("no Secret %s", name)
	return nil
}

func TestHelpHasExamples(t *testing.T) {
	noKube := func() (kubernetes.Interface, error) { t.Fatal("help must not reach a cluster"); return nil, nil }
	noDyn := func() (dynamic.Interface, error) { t.Fatal("help must not reach a cluster"); return nil, nil }
	for _, tc := range []struct {
		cmd  *cobra.Command
		want []string
	}{
		{newInstall(time.Now, &kubeFlags{}, offline), []string{"trellis install --crds", "--ha", "--identity-issuer-cert", "--set", "--dry-count", "keeps its trust anchors", "--new-identity"}},
		{newUpgrade(time.Now, &kubeFlags{}, noKube), []string{"trellis upgrade", "--kubeconfig", "reusing the identity material"}},
		{newUninstall(&kubeFlags{}, noDyn), []string{"trellis uninstall --apply", "kubectl delete -f -", "--kubeconfig"}},
	} {
		out, err := run(t, tc.cmd, "--help")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no examples", tc.cmd.Name())
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s --help lacks %q", tc.cmd.Name(), w)
			}
		}
	}
}

func TestInstall(t *testing.T) {
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline))
	if err != nil {
		t.Fatal(err)
	}
	first := objects(t, out)
	if len(first) != 18 {
		t.Errorf("default install prints %d objects, want 18", len(first))
	}
	out2, err := run(t, newInstall(time.Now, &kubeFlags{}, offline))
	if err != nil {
		t.Fatal(err)
	}
	second := objects(t, out2)
	// Generated material is random per run.
	if string(secret(t, first, install.IssuerSecretName).Data["tls.key"]) == string(secret(t, second, install.IssuerSecretName).Data["tls.key"]) {
		t.Error("two installs generated the same issuer key")
	}

	crds, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--crds", "--gateway-api-channel", "none")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(objects(t, crds)); n != 4 {
		t.Errorf("--crds prints %d objects, want 4", n)
	}
	// No cluster to look at: the Gateway API CRDs too, without Trellis's
	// labels (uninstall must never delete them).
	noCluster := &kubeFlags{kubeconfig: filepath.Join(t.TempDir(), "absent")}
	all, err := run(t, newInstall(time.Now, noCluster, offline), "--crds")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"httproutes", "grpcroutes", "referencegrants"} {
		if !strings.Contains(all, "name: "+name+".gateway.networking.k8s.io\n") || !strings.Contains(all, "gateway.networking.k8s.io/channel: standard") {
			t.Errorf("--crds without a cluster lacks the standard %s CRD", name)
		}
	}
	if n := strings.Count(all, "app.kubernetes.io/managed-by: trellis"); n != 4 {
		t.Errorf("%d CRDs labelled as Trellis's, want the 3 policy ones and ExternalWorkload", n)
	}
	if _, err := run(t, newInstall(time.Now, noCluster, offline), "--crds", "--gateway-api-channel", "beta"); err == nil {
		t.Error("an unknown channel is accepted")
	}
	count, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--dry-count")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("trellis install --dry-count:\n%s", count)
	if !strings.Contains(count, "total                          18\n") {
		t.Errorf("--dry-count:\n%s", count)
	}
	count, err = run(t, newInstall(time.Now, &kubeFlags{}, offline), "--dry-count", "--ha")
	if err != nil || !strings.Contains(count, "PodDisruptionBudget            1\n") || !strings.Contains(count, "total                          19\n") {
		t.Errorf("--dry-count --ha: %v\n%s", err, count)
	}
}

// TestInstallDefaultInboundPolicy: --default-inbound-policy reaches the
// injector's environment; a value that is not one of the five is refused
// naming them.
func TestInstallDefaultInboundPolicy(t *testing.T) {
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--default-inbound-policy", "deny")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "- name: TRELLIS_PROXY_DEFAULT_INBOUND_POLICY\n          value: \"deny\"\n") {
		t.Errorf("the controller's environment does not carry the default:\n%s", out)
	}
	_, err = run(t, newInstall(time.Now, &kubeFlags{}, offline), "--default-inbound-policy", "yes")
	if err == nil || !strings.Contains(err.Error(), "deny, audit, all-authenticated, cluster-authenticated or all-unauthenticated") {
		t.Errorf("--default-inbound-policy yes: %v, want the allowed values named", err)
	}
}

func writeMaterial(t *testing.T, dir string) install.Identity {
	t.Helper()
	id, err := install.GenerateIdentity("cluster.local", time.Hour*24*30, time.Hour*24, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"ca.crt": id.TrustAnchorsPEM, "issuer.crt": id.IssuerCertPEM, "issuer.key": id.IssuerKeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

func TestInstallSuppliedIdentity(t *testing.T) {
	dir := t.TempDir()
	id := writeMaterial(t, dir)
	f := func(n string) string { return filepath.Join(dir, n) }
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--identity-trust-anchors", f("ca.crt"), "--identity-issuer-cert", f("issuer.crt"), "--identity-issuer-key", f("issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	s := secret(t, objects(t, out), install.IssuerSecretName)
	if string(s.Data[pki.SecretKeyKey]) != string(id.IssuerKeyPEM) || string(s.Data[pki.SecretCAKey]) != string(id.TrustAnchorsPEM) {
		t.Error("the supplied issuer is not what was rendered")
	}
	out, err = run(t, newInstall(time.Now, &kubeFlags{}, offline), "--identity-trust-anchors", f("ca.crt"), "--identity-external-issuer")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objects(t, out) {
		if o.Name == install.IssuerSecretName {
			t.Error("external issuer rendered")
		}
	}

	other := t.TempDir()
	writeMaterial(t, other)
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"cert without key", []string{"--identity-trust-anchors", f("ca.crt"), "--identity-issuer-cert", f("issuer.crt")}, "go together"},
		{"no anchors", []string{"--identity-issuer-cert", f("issuer.crt"), "--identity-issuer-key", f("issuer.key")}, "--identity-trust-anchors is required"},
		{"external and issuer", []string{"--identity-trust-anchors", f("ca.crt"), "--identity-external-issuer", "--identity-issuer-cert", f("issuer.crt")}, "exclude each other"},
		{"foreign anchors", []string{"--identity-trust-anchors", filepath.Join(other, "ca.crt"), "--identity-issuer-cert", f("issuer.crt"), "--identity-issuer-key", f("issuer.key")}, "does not chain"},
		{"missing file", []string{"--identity-trust-anchors", f("nope.crt"), "--identity-external-issuer"}, "no such file"},
		{"bad set", []string{"--set", "controller.replicas=x"}, "want an integer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

// clusterFrom loads an install's Secrets and ConfigMaps into a fake
// clientset, as kubectl apply would have created them.
func clusterFrom(t *testing.T, objs []install.Object) *fake.Clientset {
	t.Helper()
	var rt []runtime.Object
	for _, o := range objs {
		switch o.Kind.Kind {
		case "Secret":
			var s corev1.Secret
			if err := yaml.Unmarshal(o.YAML, &s); err != nil {
				t.Fatal(err)
			}
			rt = append(rt, &s)
		case "ConfigMap":
			var c corev1.ConfigMap
			if err := yaml.Unmarshal(o.YAML, &c); err != nil {
				t.Fatal(err)
			}
			rt = append(rt, &c)
		}
	}
	return fake.NewClientset(rt...)
}

func TestUpgradeKeepsIdentity(t *testing.T) {
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline), "--ha")
	if err != nil {
		t.Fatal(err)
	}
	installed := objects(t, out)
	cs := clusterFrom(t, installed)
	client := func() (kubernetes.Interface, error) { return cs, nil }
	up, err := run(t, newUpgrade(time.Now, &kubeFlags{}, client), "--ha", "--set", "controller.logLevel=debug")
	if err != nil {
		t.Fatal(err)
	}
	upgraded := objects(t, up)
	if len(upgraded) != len(installed) {
		t.Errorf("upgrade prints %d objects, install printed %d", len(upgraded), len(installed))
	}
	for _, name := range []string{install.IssuerSecretName, install.WebhookSecretName} {
		a, b := secret(t, installed, name), secret(t, upgraded, name)
		for k, v := range a.Data {
			if string(b.Data[k]) != string(v) {
				t.Errorf("upgrade changed %s %s", name, k)
			}
		}
	}
	if !strings.Contains(up, `"--log-level=debug"`) {
		t.Error("upgrade ignored --set")
	}

	// A webhook certificate close to expiry is replaced; the issuer is kept.
	later := func() time.Time { return time.Now().Add(install.DefaultWebhookValidity - 10*24*time.Hour) }
	var errOut bytes.Buffer
	cmd := newUpgrade(later, &kubeFlags{}, client)
	cmd.SetErr(&errOut)
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs(nil)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	renewed := objects(t, stdout.String())
	if string(secret(t, renewed, install.WebhookSecretName).Data["tls.key"]) == string(secret(t, installed, install.WebhookSecretName).Data["tls.key"]) {
		t.Error("expiring webhook certificate kept")
	}
	if string(secret(t, renewed, install.IssuerSecretName).Data["tls.key"]) != string(secret(t, installed, install.IssuerSecretName).Data["tls.key"]) {
		t.Error("issuer changed with the webhook certificate")
	}
	if !strings.Contains(errOut.String(), "new webhook serving certificate") {
		t.Errorf("no note about the new webhook certificate: %q", errOut.String())
	}

	// No install: a clear error.
	empty := func() (kubernetes.Interface, error) { return fake.NewClientset(), nil }
	if _, err := run(t, newUpgrade(time.Now, &kubeFlags{}, empty)); err == nil || !strings.Contains(err.Error(), "trellis install first") {
		t.Errorf("upgrade of nothing: %v", err)
	}
}

func TestUninstall(t *testing.T) {
	out, err := run(t, newInstall(time.Now, &kubeFlags{}, offline))
	if err != nil {
		t.Fatal(err)
	}
	listKinds := map[schema.GroupVersionResource]string{}
	for _, k := range install.Kinds {
		listKinds[k.GVR()] = k.Kind + "List"
	}
	var rt []runtime.Object
	for _, o := range objects(t, out) {
		rt = append(rt, &unstructured.Unstructured{Object: o.Content})
	}
	other := &unstructured.Unstructured{}
	other.SetAPIVersion("v1")
	other.SetKind("ConfigMap")
	other.SetNamespace("default")
	other.SetName("app-config")
	rt = append(rt, other)
	dc := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, rt...)
	client := func() (dynamic.Interface, error) { return dc, nil }

	printed, err := run(t, newUninstall(&kubeFlags{}, client))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(printed, "app-config") || strings.Count(printed, "\nkind: ") != 18 {
		t.Errorf("uninstall lists:\n%s", printed)
	}
	applied, err := run(t, newUninstall(&kubeFlags{}, client), "--apply")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(applied, "18 objects deleted") {
		t.Errorf("uninstall --apply:\n%s", applied)
	}
	left, err := run(t, newUninstall(&kubeFlags{}, client))
	if err != nil || strings.Contains(left, "\nkind: ") {
		t.Errorf("after uninstall --apply, still listed (%v):\n%s", err, left)
	}
}
