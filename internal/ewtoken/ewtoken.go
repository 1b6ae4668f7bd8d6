// Package ewtoken is the contract of an ExternalWorkload's credentials:
// the single-use bootstrap token `trellis external-workload token` mints
// and the controller redeems once (controller/k8s/ewtoken), the Secret
// that records only its hash, the renewal token a proxy sends with its
// current certificate, and the key digest kept in the workload's status.
// Defined here once so the CLI, the controller and the proxy cannot drift;
// the Secret is in ewsecret, as the proxy needs no Kubernetes types.
package ewtoken

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Token formats:
//
//	trellis-ew-v1:<namespace>/<name>:<secret>   bootstrap (secret: 32 random bytes, base64url, no padding)
//	trellis-ew-renew-v1:<namespace>/<name>      renewal, sent with the current certificate
const (
	BootstrapPrefix = "trellis-ew-v1:"
	RenewPrefix     = "trellis-ew-renew-v1:"
	// SecretBytes is the random part of a bootstrap token.
	SecretBytes = 32
	// MaxTokenLen bounds what is parsed: the prefix, a namespace (63), a
	// name (253), the separators and the encoded secret (43) fit in it.
	MaxTokenLen = 512
)

var secretEncoding = base64.RawURLEncoding.Strict()

// encodedSecretLen is the length of the secret in a token.
var encodedSecretLen = secretEncoding.EncodedLen(SecretBytes)

// Errors of the parsers. They never hold any byte of the token.
var (
	ErrNotBootstrap = errors.New("not an external workload bootstrap token (" + BootstrapPrefix + "...)")
	ErrNotRenew     = errors.New("not an external workload renewal token (" + RenewPrefix + "...)")
	ErrMalformed    = errors.New("malformed external workload token")
)

// Bootstrap is a bootstrap token. It holds the secret: String, GoString
// and LogValue leave it out, only Token gives it.
type Bootstrap struct {
	Namespace, Name string
	secret          [SecretBytes]byte
}

// NewBootstrap makes a token for the ExternalWorkload namespace/name with
// a secret read from random (crypto/rand when nil).
func NewBootstrap(namespace, name string, random io.Reader) (Bootstrap, error) {
	if err := CheckRef(namespace, name); err != nil {
		return Bootstrap{}, err
	}
	if random == nil {
		random = rand.Reader
	}
	b := Bootstrap{Namespace: namespace, Name: name}
	if _, err := io.ReadFull(random, b.secret[:]); err != nil {
		return Bootstrap{}, fmt.Errorf("bootstrap token secret: %w", err)
	}
	return b, nil
}

// Token is the whole token, secret included: for the operator only.
func (b Bootstrap) Token() string {
	return BootstrapPrefix + b.Namespace + "/" + b.Name + ":" + secretEncoding.EncodeToString(b.secret[:])
}

// String names the token without its secret.
func (b Bootstrap) String() string {
	return BootstrapPrefix + b.Namespace + "/" + b.Name + ":<redacted>"
}

// GoString is String, so %#v does not print the secret either.
func (b Bootstrap) GoString() string { return b.String() }

// LogValue keeps the secret out of slog.
func (b Bootstrap) LogValue() slog.Value { return slog.StringValue(b.String()) }

// Hash is the hex SHA-256 of the whole token: all the controller keeps.
func (b Bootstrap) Hash() string {
	sum := sha256.Sum256([]byte(b.Token()))
	return hex.EncodeToString(sum[:])
}

// ParseBootstrap parses a bootstrap token strictly: bounded length, the
// prefix, a namespace (DNS label) and name (DNS subdomain), and exactly
// SecretBytes of canonical base64url.
func ParseBootstrap(token []byte) (Bootstrap, error) {
	if len(token) > MaxTokenLen {
		return Bootstrap{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	rest, ok := bytes.CutPrefix(token, []byte(BootstrapPrefix))
	if !ok {
		return Bootstrap{}, ErrNotBootstrap
	}
	ref, enc, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return Bootstrap{}, fmt.Errorf("%w: no secret", ErrMalformed)
	}
	ns, name, err := parseRef(ref)
	if err != nil {
		return Bootstrap{}, err
	}
	b := Bootstrap{Namespace: ns, Name: name}
	if len(enc) != encodedSecretLen {
		return Bootstrap{}, fmt.Errorf("%w: the secret is not %d bytes of base64url", ErrMalformed, SecretBytes)
	}
	if n, err := secretEncoding.Decode(b.secret[:], enc); err != nil || n != SecretBytes {
		return Bootstrap{}, fmt.Errorf("%w: the secret is not %d bytes of base64url", ErrMalformed, SecretBytes)
	}
	return b, nil
}

// IsBootstrap says whether token claims to be a bootstrap token (it may
// still be malformed).
func IsBootstrap(token []byte) bool { return bytes.HasPrefix(token, []byte(BootstrapPrefix)) }

// IsRenew says whether token claims to be a renewal token.
func IsRenew(token []byte) bool { return bytes.HasPrefix(token, []byte(RenewPrefix)) }

// RenewToken is the token of a renewal of namespace/name.
func RenewToken(namespace, name string) []byte {
	return []byte(RenewPrefix + namespace + "/" + name)
}

// ParseRenew parses a renewal token strictly.
func ParseRenew(token []byte) (namespace, name string, err error) {
	if len(token) > MaxTokenLen {
		return "", "", fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	ref, ok := bytes.CutPrefix(token, []byte(RenewPrefix))
	if !ok {
		return "", "", ErrNotRenew
	}
	return parseRef(ref)
}

// ParseRef parses NAMESPACE/NAME (the proxy's --external-workload).
func ParseRef(s string) (namespace, name string, err error) {
	if len(s) > MaxTokenLen {
		return "", "", fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	return parseRef([]byte(s))
}

func parseRef(ref []byte) (string, string, error) {
	ns, name, ok := bytes.Cut(ref, []byte("/"))
	if !ok {
		return "", "", fmt.Errorf("%w: want <namespace>/<name>", ErrMalformed)
	}
	if err := CheckRef(string(ns), string(name)); err != nil {
		return "", "", err
	}
	return string(ns), string(name), nil
}

// CheckRef says whether namespace/name can name an ExternalWorkload: a
// DNS label and a DNS subdomain (Kubernetes' rules). Its errors do not
// quote the values: they may come from a token.
func CheckRef(namespace, name string) error {
	if len(namespace) > 63 || !dnsLabels(namespace) || strings.Contains(namespace, ".") {
		return fmt.Errorf("%w: the namespace is not a DNS label", ErrMalformed)
	}
	if len(name) > 253 || !dnsLabels(name) {
		return fmt.Errorf("%w: the name is not a DNS subdomain", ErrMalformed)
	}
	return nil
}

// dnsLabels: dot-separated non-empty labels of lower-case letters, digits
// and inner '-' (Kubernetes' DNS-1123 subdomain pattern).
func dnsLabels(s string) bool {
	if s == "" {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}
	return true
}

// KeySHA256 is the hex SHA-256 of pub's SubjectPublicKeyInfo DER: the
// status.keySHA256 of an ExternalWorkload.
func KeySHA256(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// Ref is "namespace/name", for messages.
func Ref(namespace, name string) string { return namespace + "/" + name }

// ValidHash is a hex SHA-256, lower case as Hash writes it.
func ValidHash(h string) bool {
	if len(h) != 2*sha256.Size || strings.ToLower(h) != h {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}
