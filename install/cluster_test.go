package install

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
)

func TestKindsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds {
		gvr := k.GVR()
		if gvr.Version == "" || gvr.Resource == "" || seen[k.Kind] {
			t.Errorf("bad or duplicate entry %+v", k)
		}
		seen[k.Kind] = true
	}
}

func unstructuredObj(apiVersion, kind, ns, name string, labels map[string]string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	u.SetName(name)
	u.SetNamespace(ns)
	u.SetLabels(labels)
	return u
}

func fakeDynamic(objs ...runtime.Object) *dynamicfake.FakeDynamicClient {
	listKinds := map[schema.GroupVersionResource]string{}
	for _, k := range Kinds {
		listKinds[k.GVR()] = k.Kind + "List"
	}
	return dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, objs...)
}

// TestFindInstalledSelectsOnlyTrellis feeds a cluster holding an install
// plus look-alikes (one Trellis label only, other apps' objects, a
// foreign CRD) and checks uninstall would remove exactly the install.
func TestFindInstalledSelectsOnlyTrellis(t *testing.T) {
	id, wh := testMaterial(t)
	m, err := Render(Options{HA: true, Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	crds, err := RenderCRDs()
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	want := map[string]bool{}
	for _, o := range append(slices.Clone(crds.Objects), m.Objects...) {
		objs = append(objs, &unstructured.Unstructured{Object: o.Content})
		want[o.Ref()] = true
	}
	onlyPartOf := map[string]string{LabelPartOf: LabelValue}
	otherManager := map[string]string{LabelPartOf: LabelValue, LabelManagedBy: "Helm"}
	injected := map[string]string{LabelPartOf: LabelValue, LabelManagedBy: LabelValue}
	objs = append(objs,
		unstructuredObj("v1", "ConfigMap", Namespace, "kube-root-ca.crt", nil),
		unstructuredObj("v1", "ConfigMap", "default", "half-labelled", onlyPartOf),
		unstructuredObj("v1", "Secret", "default", "someone-elses", otherManager),
		unstructuredObj("apps/v1", "Deployment", "default", "web", map[string]string{"app": "web"}),
		unstructuredObj("rbac.authorization.k8s.io/v1", "ClusterRole", "", "admin", nil),
		unstructuredObj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "httproutes.gateway.networking.k8s.io", nil),
		unstructuredObj("v1", "Namespace", "", "default", nil),
		// Made by Trellis in a user namespace (e.g. by the injector): ours.
		unstructuredObj("v1", "ConfigMap", "web", "trellis-trust-anchors", injected),
		// The webhook configuration with its labels removed: still ours by name.
	)
	want["ConfigMap web/trellis-trust-anchors"] = true
	dc := fakeDynamic(objs...)
	found, err := FindInstalled(context.Background(), dc)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, f := range found {
		got[f.Ref()] = true
	}
	for ref := range want {
		if !got[ref] {
			t.Errorf("uninstall misses %s", ref)
		}
	}
	for ref := range got {
		if !want[ref] {
			t.Errorf("uninstall would delete %s, which Trellis did not install", ref)
		}
	}
	if len(found) != 23+1 {
		t.Errorf("%d objects found, want 24", len(found))
	}
	if found[0].Kind.Kind != "MutatingWebhookConfiguration" || found[len(found)-1].Kind.Kind != "CustomResourceDefinition" {
		t.Errorf("delete order starts with %s and ends with %s; want the webhook first and CRDs last", found[0].Ref(), found[len(found)-1].Ref())
	}

	// Delete removes exactly those, and a second find comes back empty.
	if err := Delete(context.Background(), dc, found); err != nil {
		t.Fatal(err)
	}
	again, err := FindInstalled(context.Background(), dc)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 0 {
		t.Errorf("after delete, still found %v", again)
	}
	for _, keep := range []struct {
		gvr      schema.GroupVersionResource
		ns, name string
	}{
		{schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, Namespace, "kube-root-ca.crt"},
		{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "default", "someone-elses"},
		{schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, "default", "web"},
		{schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, "", "httproutes.gateway.networking.k8s.io"},
	} {
		if _, err := dc.Resource(keep.gvr).Namespace(keep.ns).Get(context.Background(), keep.name, metav1.GetOptions{}); err != nil {
			t.Errorf("%s %s/%s was deleted: %v", keep.gvr.Resource, keep.ns, keep.name, err)
		}
	}
	// The webhook configuration is found by name even without labels.
	unlabelled := unstructuredObj("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", WebhookConfigName, nil)
	found, err = FindInstalled(context.Background(), fakeDynamic(unlabelled))
	if err != nil || len(found) != 1 {
		t.Errorf("unlabelled webhook configuration: found %v, %v", found, err)
	}
	if out := string(DeleteManifest(found)); !strings.Contains(out, "kind: MutatingWebhookConfiguration\nmetadata:\n  name: trellis-injector\n") {
		t.Errorf("delete manifest:\n%s", out)
	}
}

func secretOf(name string, labels map[string]string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace, Labels: labels}, Type: corev1.SecretTypeTLS, Data: data}
}

func TestReadExisting(t *testing.T) {
	id, wh := testMaterial(t)
	ours := map[string]string{LabelPartOf: LabelValue, LabelManagedBy: LabelValue}
	anchors := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: TrustAnchorsName, Namespace: Namespace, Labels: ours},
		Data: map[string]string{TrustAnchorsKey: string(id.TrustAnchorsPEM)}}
	issuer := func(labels map[string]string) *corev1.Secret {
		return secretOf(IssuerSecretName, labels, map[string][]byte{"tls.crt": id.IssuerCertPEM, "tls.key": id.IssuerKeyPEM, "ca.crt": id.TrustAnchorsPEM})
	}
	webhook := secretOf(WebhookSecretName, ours, map[string][]byte{"tls.crt": wh.CertPEM, "tls.key": wh.KeyPEM, "ca.crt": wh.CAPEM})

	ex, err := ReadExisting(context.Background(), fake.NewClientset(anchors, issuer(ours), webhook))
	if err != nil {
		t.Fatal(err)
	}
	if string(ex.Identity.IssuerKeyPEM) != string(id.IssuerKeyPEM) || string(ex.Identity.TrustAnchorsPEM) != string(id.TrustAnchorsPEM) ||
		ex.Webhook == nil || string(ex.Webhook.KeyPEM) != string(wh.KeyPEM) {
		t.Fatal("existing material not read back")
	}
	// Re-rendering with it yields the same Secrets as the first install.
	first, err := Render(Options{Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	second, err := Render(Options{Version: "dev2", Identity: ex.Identity, Webhook: *ex.Webhook})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{IssuerSecretName, WebhookSecretName} {
		a := find[*corev1.Secret](t, first, "Secret", name)
		b := find[*corev1.Secret](t, second, "Secret", name)
		if !mapsEqual(a.Data, b.Data) {
			t.Errorf("upgrade changed Secret %s", name)
		}
	}

	// cert-manager's Secret (no Trellis labels) is external.
	ex, err = ReadExisting(context.Background(), fake.NewClientset(anchors, issuer(map[string]string{"controller.cert-manager.io/fao": "true"})))
	if err != nil {
		t.Fatal(err)
	}
	if !ex.Identity.External() || ex.Webhook != nil {
		t.Errorf("cert-manager issuer: external=%v webhook=%v", ex.Identity.External(), ex.Webhook)
	}
	// Nothing installed.
	if _, err := ReadExisting(context.Background(), fake.NewClientset()); err == nil || !strings.Contains(err.Error(), "trellis install first") {
		t.Errorf("empty cluster: %v", err)
	}
	if _, err := ReadExisting(context.Background(), fake.NewClientset(anchors)); err == nil || !strings.Contains(err.Error(), IssuerSecretName) {
		t.Errorf("no issuer Secret: %v", err)
	}
}

func mapsEqual(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}
