// Package ewsecret is the Secret that records an external workload's
// bootstrap token (internal/ewtoken) in the control plane's namespace:
// only the token's hash, never the token. `trellis external-workload
// token` creates it (Mint); the controller reads and deletes it
// (controller/k8s/ewtoken).
package ewsecret

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/trellis-mesh/trellis/internal/ewtoken"
)

// SecretType marks a token Secret; the controller reads no other.
const SecretType corev1.SecretType = "trellis.io/external-workload-token"

// The Secret's name, labels and data.
const (
	// SecretPrefix starts the name: trellis-ew-token-<16 hex of the hash>.
	SecretPrefix = "trellis-ew-token-"
	// LabelToken ("true") marks every token Secret, so they can be listed.
	LabelToken = "trellis.io/external-workload-token"
	// AnnotationWorkload names the workload (namespace/name) for people;
	// the data is what counts.
	AnnotationWorkload = "trellis.io/external-workload"
	// Keys of the data.
	KeyHash      = "hash"
	KeyNamespace = "namespace"
	KeyName      = "name"
	KeyExpiry    = "expiry" // RFC 3339
)

// Lifetimes of a bootstrap token.
const (
	DefaultTTL = time.Hour
	MaxTTL     = 24 * time.Hour
)

// Selector lists the token Secrets.
const Selector = LabelToken + "=true"

// Name is the name of the Secret of the token whose hash is hash: the
// first 16 hex digits, so that the token finds its Secret.
func Name(hash string) string {
	if len(hash) > 16 {
		hash = hash[:16]
	}
	return SecretPrefix + hash
}

// For is the Secret recording b, valid until expiry, in namespace ns (the
// control plane's).
func For(b ewtoken.Bootstrap, ns string, expiry time.Time) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: Name(b.Hash()), Namespace: ns,
			Labels:      map[string]string{"app.kubernetes.io/part-of": "trellis", LabelToken: "true"},
			Annotations: map[string]string{AnnotationWorkload: ewtoken.Ref(b.Namespace, b.Name)},
		},
		Type: SecretType,
		Data: map[string][]byte{
			KeyHash:      []byte(b.Hash()),
			KeyNamespace: []byte(b.Namespace),
			KeyName:      []byte(b.Name),
			KeyExpiry:    []byte(expiry.UTC().Format(time.RFC3339)),
		},
	}
}

// Record is what a token Secret says.
type Record struct {
	Hash, Namespace, Name string
	Expiry                time.Time
}

// Read checks a token Secret's shape and returns what it records.
func Read(s *corev1.Secret) (Record, error) {
	if s.Type != SecretType {
		return Record{}, fmt.Errorf("secret %s: type %q, want %q", s.Name, s.Type, SecretType)
	}
	r := Record{Hash: string(s.Data[KeyHash]), Namespace: string(s.Data[KeyNamespace]), Name: string(s.Data[KeyName])}
	if !ewtoken.ValidHash(r.Hash) || Name(r.Hash) != s.Name {
		return Record{}, fmt.Errorf("secret %s: %s is not the hex SHA-256 its name starts with", s.Name, KeyHash)
	}
	if err := ewtoken.CheckRef(r.Namespace, r.Name); err != nil {
		return Record{}, fmt.Errorf("secret %s: %w", s.Name, err)
	}
	exp, err := time.Parse(time.RFC3339, string(s.Data[KeyExpiry]))
	if err != nil {
		return Record{}, fmt.Errorf("secret %s: %s: %w", s.Name, KeyExpiry, err)
	}
	r.Expiry = exp
	return r, nil
}

// CheckTTL refuses a lifetime outside (0, MaxTTL].
func CheckTTL(ttl time.Duration) error {
	if ttl <= 0 || ttl > MaxTTL {
		return fmt.Errorf("token lifetime %s: want more than 0 and at most %s", ttl, MaxTTL)
	}
	return nil
}

// Mint makes a bootstrap token for the ExternalWorkload namespace/name and
// creates its Secret in controlPlaneNS. The token is returned only here.
func Mint(ctx context.Context, secrets corev1client.SecretsGetter, controlPlaneNS, namespace, name string, ttl time.Duration, now time.Time) (ewtoken.Bootstrap, time.Time, error) {
	if err := CheckTTL(ttl); err != nil {
		return ewtoken.Bootstrap{}, time.Time{}, err
	}
	b, err := ewtoken.NewBootstrap(namespace, name, nil)
	if err != nil {
		return ewtoken.Bootstrap{}, time.Time{}, err
	}
	// RFC 3339 keeps seconds: the recorded expiry is never later.
	expiry := now.Add(ttl).UTC().Truncate(time.Second)
	s := For(b, controlPlaneNS, expiry)
	if _, err := secrets.Secrets(controlPlaneNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		return ewtoken.Bootstrap{}, time.Time{}, fmt.Errorf("create secret %s/%s: %w", controlPlaneNS, s.Name, err)
	}
	return b, expiry, nil
}
