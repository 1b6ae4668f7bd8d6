package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

// CertFingerprint is the hex SHA-256 of one certificate's DER, the name of a
// single certificate in bundles, logs and inspect output. For a one-element
// bundle it equals Fingerprint.
func CertFingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// AddToBundle returns bundle with every certificate of add that it does not
// already hold (same fingerprint) appended in order, and how many were added.
// Order is kept because the bundle's Fingerprint depends on it.
func AddToBundle(bundle, add []*x509.Certificate) ([]*x509.Certificate, int) {
	seen := make(map[string]bool, len(bundle)+len(add))
	out := make([]*x509.Certificate, 0, len(bundle)+len(add))
	for _, c := range bundle {
		fp := CertFingerprint(c)
		if !seen[fp] {
			seen[fp] = true
			out = append(out, c)
		}
	}
	n := 0
	for _, c := range add {
		fp := CertFingerprint(c)
		if !seen[fp] {
			seen[fp] = true
			out = append(out, c)
			n++
		}
	}
	return out, n
}

// RemoveFromBundle returns bundle without the certificates of remove (by
// fingerprint) and how many were removed.
func RemoveFromBundle(bundle, remove []*x509.Certificate) ([]*x509.Certificate, int) {
	drop := make(map[string]bool, len(remove))
	for _, c := range remove {
		drop[CertFingerprint(c)] = true
	}
	out := make([]*x509.Certificate, 0, len(bundle))
	for _, c := range bundle {
		if !drop[CertFingerprint(c)] {
			out = append(out, c)
		}
	}
	return out, len(bundle) - len(out)
}

// BundleContains reports whether bundle holds c (by fingerprint).
func BundleContains(bundle []*x509.Certificate, c *x509.Certificate) bool {
	fp := CertFingerprint(c)
	for _, b := range bundle {
		if CertFingerprint(b) == fp {
			return true
		}
	}
	return false
}

// KeyMatchesCert checks that key is the private key of cert's public key,
// so a certificate is never installed beside someone else's key.
func KeyMatchesCert(key crypto.Signer, cert *x509.Certificate) error {
	if key == nil || cert == nil {
		return errors.New("key or certificate missing")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok {
		return fmt.Errorf("key of type %T cannot be compared", key.Public())
	}
	if !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("the %s key is not the private key of certificate %q", KeyType(key.Public()), cert.Subject.String())
	}
	return nil
}

// KeyType names a public key for humans, e.g. "ECDSA P-256".
func KeyType(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case ed25519.PublicKey:
		return "Ed25519"
	default:
		return fmt.Sprintf("%T", pub)
	}
}
