package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// DetectExisting reads the identity material of an install in the
// cluster, as ReadExisting, but returns nil and no error when the cluster
// holds neither the trust-anchors ConfigMap nor the issuer Secret: a
// fresh cluster. A half install (one of them) is an error, never "fresh",
// so that `trellis install` does not replace what is left of a mesh.
func DetectExisting(ctx context.Context, c kubernetes.Interface) (*Existing, error) {
	_, cmErr := c.CoreV1().ConfigMaps(Namespace).Get(ctx, TrustAnchorsName, metav1.GetOptions{})
	if cmErr != nil && !apierrors.IsNotFound(cmErr) {
		return nil, fmt.Errorf("read ConfigMap %s/%s: %w", Namespace, TrustAnchorsName, cmErr)
	}
	_, secErr := c.CoreV1().Secrets(Namespace).Get(ctx, IssuerSecretName, metav1.GetOptions{})
	if secErr != nil && !apierrors.IsNotFound(secErr) {
		return nil, fmt.Errorf("read Secret %s/%s: %w", Namespace, IssuerSecretName, secErr)
	}
	if apierrors.IsNotFound(cmErr) && apierrors.IsNotFound(secErr) {
		return nil, nil
	}
	ex, err := ReadExisting(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("the cluster holds part of a Trellis install: %w", err)
	}
	return &ex, nil
}

// IsUnreachable reports whether err means the API server could not be
// reached at all (no answer), as opposed to an answer refusing the call.
func IsUnreachable(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return false
	}
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne)
}

// KeepsAnchors says whether supplied material keeps trusting every anchor
// of the installed bundle, the condition under which applying it leaves
// every running proxy's certificate verifiable. It names the first
// installed anchor the supplied bundle drops.
func KeepsAnchors(installed, supplied []byte) error {
	old, err := pki.ParseCertsPEM(installed)
	if err != nil {
		return fmt.Errorf("installed trust anchors: %w", err)
	}
	next, err := pki.ParseCertsPEM(supplied)
	if err != nil {
		return fmt.Errorf("supplied trust anchors: %w", err)
	}
	have := make([]string, 0, len(next))
	for _, c := range next {
		have = append(have, pki.CertFingerprint(c))
	}
	for _, c := range old {
		if !slices.Contains(have, pki.CertFingerprint(c)) {
			return fmt.Errorf("the supplied trust anchors drop the installed anchor %q (SHA-256 %s)", c.Subject.CommonName, pki.CertFingerprint(c))
		}
	}
	return nil
}

// AnchorFingerprints lists the SHA-256 fingerprints of a PEM bundle, for
// messages ("" entries are never returned).
func AnchorFingerprints(bundle []byte) []string {
	certs, err := pki.ParseCertsPEM(bundle)
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(certs))
	for _, c := range certs {
		out = append(out, pki.CertFingerprint(c))
	}
	return out
}
