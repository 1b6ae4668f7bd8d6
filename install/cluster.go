package install

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// Names of the Secrets and ConfigMap holding identity material.
const (
	IssuerSecretName     = "trellis-identity-issuer"
	WebhookSecretName    = "trellis-webhook-tls"
	TrustAnchorsName     = "trellis-trust-anchors"
	TrustAnchorsKey      = "ca-bundle.crt"
	FieldManager         = "trellis"
	errNoInstallFoundFmt = "no Trellis install found in namespace %s (%s): run trellis install first"
)

// Existing is the material an installed control plane holds.
type Existing struct {
	Identity Identity
	// Webhook is nil when the webhook Secret is missing.
	Webhook *WebhookTLS
}

// ReadExisting reads the identity and webhook material of an install, so
// that an upgrade keeps them. An issuer Secret not labelled as Trellis's
// (cert-manager's) is reported as external and is not re-rendered.
func ReadExisting(ctx context.Context, c kubernetes.Interface) (Existing, error) {
	var ex Existing
	cm, err := c.CoreV1().ConfigMaps(Namespace).Get(ctx, TrustAnchorsName, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return ex, fmt.Errorf(errNoInstallFoundFmt, Namespace, "no ConfigMap "+TrustAnchorsName)
		}
		return ex, fmt.Errorf("read ConfigMap %s/%s: %w", Namespace, TrustAnchorsName, err)
	}
	anchors := cm.Data[TrustAnchorsKey]
	if strings.TrimSpace(anchors) == "" {
		return ex, fmt.Errorf("ConfigMap %s/%s has no %s", Namespace, TrustAnchorsName, TrustAnchorsKey)
	}
	ex.Identity.TrustAnchorsPEM = []byte(anchors)

	sec, err := c.CoreV1().Secrets(Namespace).Get(ctx, IssuerSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return ex, fmt.Errorf(errNoInstallFoundFmt, Namespace, "no Secret "+IssuerSecretName)
	case err != nil:
		return ex, fmt.Errorf("read Secret %s/%s: %w", Namespace, IssuerSecretName, err)
	}
	if isOurs(sec) {
		ex.Identity.IssuerCertPEM = sec.Data[pki.SecretCertKey]
		ex.Identity.IssuerKeyPEM = sec.Data[pki.SecretKeyKey]
		if len(ex.Identity.IssuerCertPEM) == 0 || len(ex.Identity.IssuerKeyPEM) == 0 {
			return ex, fmt.Errorf("issuer Secret %s/%s lacks %s or %s", Namespace, IssuerSecretName, pki.SecretCertKey, pki.SecretKeyKey)
		}
	}

	wh, err := c.CoreV1().Secrets(Namespace).Get(ctx, WebhookSecretName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return ex, nil
	case err != nil:
		return ex, fmt.Errorf("read Secret %s/%s: %w", Namespace, WebhookSecretName, err)
	}
	ex.Webhook = &WebhookTLS{CAPEM: wh.Data[pki.SecretCAKey], CertPEM: wh.Data[pki.SecretCertKey], KeyPEM: wh.Data[pki.SecretKeyKey]}
	return ex, nil
}

func isOurs(s *corev1.Secret) bool {
	return s.Labels[LabelPartOf] == LabelValue && s.Labels[LabelManagedBy] == LabelValue
}

// Installed is one object found in the cluster.
type Installed struct {
	Kind      Kind
	Name      string
	Namespace string
}

// Ref is "Kind namespace/name" or "Kind name".
func (i Installed) Ref() string {
	return Object{Kind: i.Kind, Name: i.Name, Namespace: i.Namespace}.Ref()
}

// FindInstalled lists what uninstall removes: every object of the kinds
// Trellis installs that carries both Trellis labels, in any namespace,
// plus the Trellis CRDs and the injector's webhook configuration by name
// (even if someone removed their labels). The result is in delete order:
// the webhook first (so pod creation never waits on a controller being
// deleted), the CRDs last.
func FindInstalled(ctx context.Context, dc dynamic.Interface) ([]Installed, error) {
	crds, err := CRDNames()
	if err != nil {
		return nil, err
	}
	byName := map[string][]string{
		"CustomResourceDefinition":     crds,
		"MutatingWebhookConfiguration": {WebhookConfigName},
	}
	seen := map[string]bool{}
	var out []Installed
	add := func(k Kind, u *unstructured.Unstructured) {
		i := Installed{Kind: k, Name: u.GetName(), Namespace: u.GetNamespace()}
		if !seen[i.Ref()] {
			seen[i.Ref()] = true
			out = append(out, i)
		}
	}
	for _, k := range Kinds {
		list, err := dc.Resource(k.GVR()).List(ctx, metav1.ListOptions{LabelSelector: Selector})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", k.Resource, err)
		}
		for i := range list.Items {
			add(k, &list.Items[i])
		}
		for _, name := range byName[k.Kind] {
			u, err := dc.Resource(k.GVR()).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("get %s %s: %w", k.Resource, name, err)
			}
			add(k, u)
		}
	}
	slices.SortStableFunc(out, func(a, b Installed) int { return deleteRank(a.Kind) - deleteRank(b.Kind) })
	return out, nil
}

// deleteRank orders deletion: webhook, then reverse apply order, CRDs last.
func deleteRank(k Kind) int {
	switch k.Kind {
	case "MutatingWebhookConfiguration":
		return -1
	case "CustomResourceDefinition":
		return 1000
	}
	return 100 - k.Order
}

// Delete deletes objects in order (background propagation); objects
// already gone are fine. It returns every failure, not just the first.
func Delete(ctx context.Context, dc dynamic.Interface, objs []Installed) error {
	var errs []error
	policy := metav1.DeletePropagationBackground
	for _, o := range objs {
		err := dc.Resource(o.Kind.GVR()).Namespace(o.Namespace).Delete(ctx, o.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete %s: %w", o.Ref(), err))
		}
	}
	return errors.Join(errs...)
}

// Apply server-side applies a manifest's objects in order, as
// `kubectl apply --server-side --force-conflicts` would, with field
// manager "trellis".
func Apply(ctx context.Context, dc dynamic.Interface, m *Manifest) error {
	for _, o := range m.Objects {
		u := &unstructured.Unstructured{Object: o.Content}
		_, err := dc.Resource(o.Kind.GVR()).Namespace(o.Namespace).Apply(ctx, o.Name, u, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			return fmt.Errorf("apply %s: %w", o.Ref(), err)
		}
	}
	return nil
}

// DeleteManifest is the uninstall listing as YAML for `kubectl delete -f -`.
func DeleteManifest(objs []Installed) []byte {
	var b strings.Builder
	b.WriteString("# Objects trellis uninstall removes (labelled " + Selector + ", plus the Trellis CRDs and webhook configuration).\n")
	for _, o := range objs {
		b.WriteString("---\n")
		fmt.Fprintf(&b, "apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\n", o.Kind.APIVersion, o.Kind.Kind, o.Name)
		if o.Namespace != "" {
			fmt.Fprintf(&b, "  namespace: %s\n", o.Namespace)
		}
	}
	return []byte(b.String())
}
