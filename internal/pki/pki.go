// Package pki holds the certificate operations of the mesh: keys, CSRs, the
// anchor/issuer CA, workload certificate issuance and peer verification.
// Both the controller (signing) and the proxy (requesting, verifying) use it.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// Errors returned by Verify, so callers can count failures by reason.
var (
	ErrNoCertificate = errors.New("peer presented no certificate")
	ErrUntrusted     = errors.New("peer certificate does not chain to a trusted anchor")
	ErrExpired       = errors.New("peer certificate is expired or not yet valid")
	ErrWrongIdentity = errors.New("peer identity is not the expected one")
	ErrBadIdentity   = errors.New("peer certificate carries no valid SPIFFE identity")
)

// ClockSkew is how far back a new certificate's NotBefore is set, so peers
// whose clocks run a little behind accept it at once.
const ClockSkew = time.Minute

// DefaultWorkloadLifetime is the lifetime of workload certificates when
// nothing else is configured (the store file's certificateLifetime, the
// Kubernetes mode's --certificate-lifetime); proxies renew at 70 % of it.
const DefaultWorkloadLifetime = 24 * time.Hour

// GenerateKey makes an ECDSA P-256 key, the only key type the mesh uses.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate P-256 key: %w", err)
	}
	return k, nil
}

// NewCSR returns a DER CSR whose only SAN is the identity's SPIFFE ID.
func NewCSR(key crypto.Signer, id identity.ID) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	return der, nil
}

// MaxCSRBytes bounds a CSR: a P-256 one with a SPIFFE ID is about 300 bytes.
const MaxCSRBytes = 4096

// ParseCSR parses a DER CSR, checks its signature and that it asks for
// exactly one SPIFFE ID and nothing else, with a P-256 key.
//
// The CSR comes from an unauthenticated peer: its size is bounded and its
// key type checked before the signature, whose cost a hostile key (a huge
// RSA modulus and exponent) would otherwise set.
func ParseCSR(der []byte) (*x509.CertificateRequest, identity.ID, error) {
	if len(der) > MaxCSRBytes {
		return nil, identity.ID{}, fmt.Errorf("CSR of %d bytes: at most %d", len(der), MaxCSRBytes)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, identity.ID{}, fmt.Errorf("parse CSR: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() || csr.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		return nil, identity.ID{}, errors.New("CSR key is not ECDSA P-256 signed with SHA-256")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, identity.ID{}, fmt.Errorf("CSR signature: %w", err)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, identity.ID{}, errors.New("CSR has DNS, IP or e-mail SANs; only the SPIFFE ID is allowed")
	}
	if len(csr.URIs) != 1 {
		return nil, identity.ID{}, fmt.Errorf("CSR has %d URI SANs, want exactly one SPIFFE ID", len(csr.URIs))
	}
	id, err := identity.Parse(csr.URIs[0].String())
	if err != nil {
		return nil, identity.ID{}, fmt.Errorf("CSR: %w", err)
	}
	return csr, id, nil
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

// NewRoot makes a self-signed trust anchor.
func NewRoot(commonName string, validity time.Duration, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse root: %w", err)
	}
	return cert, key, nil
}

// Issuer signs workload certificates: an intermediate CA and its key, plus
// the certificates between it and the anchor (usually none).
type Issuer struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// Chain holds intermediates above Cert, below the anchor.
	Chain []*x509.Certificate
}

// NewIssuer makes an intermediate CA signed by parent.
func NewIssuer(parent *x509.Certificate, parentKey crypto.Signer, commonName string, validity time.Duration, now time.Time) (*Issuer, error) {
	return newIssuer(parent, parentKey, commonName, validity, now, nil)
}

// newIssuer makes an intermediate CA signed by parent, valid for validity
// but never beyond parent, that may sign leaves only; constrain, when not
// nil, adds to its template.
func newIssuer(parent *x509.Certificate, parentKey crypto.Signer, commonName string, validity time.Duration, now time.Time, constrain func(*x509.Certificate)) (*Issuer, error) {
	key, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(parent.NotAfter) {
		notAfter = parent.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if constrain != nil {
		constrain(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, fmt.Errorf("create issuer: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issuer: %w", err)
	}
	return &Issuer{Cert: cert, Key: key}, nil
}

// Sign issues a workload certificate for id to pub. The lifetime is cut to
// the issuer's own expiry; an expired issuer refuses to sign.
func (is *Issuer) Sign(pub crypto.PublicKey, id identity.ID, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	if now.After(is.Cert.NotAfter) {
		return nil, fmt.Errorf("issuer %q expired at %s: refusing to sign", is.Cert.Subject.CommonName, is.Cert.NotAfter.Format(time.RFC3339))
	}
	if now.Before(is.Cert.NotBefore) {
		return nil, fmt.Errorf("issuer %q not valid before %s", is.Cert.Subject.CommonName, is.Cert.NotBefore.Format(time.RFC3339))
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(is.Cert.NotAfter) {
		notAfter = is.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		NotBefore:    now.Add(-ClockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.Cert, pub, is.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse issued certificate: %w", err)
	}
	return cert, nil
}

// ChainDER returns leaf followed by the issuer and its intermediates.
func (is *Issuer) ChainDER(leaf *x509.Certificate) [][]byte {
	out := [][]byte{leaf.Raw, is.Cert.Raw}
	for _, c := range is.Chain {
		out = append(out, c.Raw)
	}
	return out
}

// Verify checks a peer's certificate chain (leaf first, DER) against roots
// at now for the given usage, and returns the peer's identity. When want is
// not zero the identity must be exactly want.
func Verify(rawCerts [][]byte, roots *x509.CertPool, usage x509.ExtKeyUsage, want identity.ID, now time.Time) (identity.ID, error) {
	if len(rawCerts) == 0 {
		return identity.ID{}, ErrNoCertificate
	}
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return identity.ID{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
		}
		certs = append(certs, c)
	}
	return VerifyCerts(certs, roots, usage, want, now)
}

// VerifyCerts is Verify on parsed certificates.
func VerifyCerts(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, want identity.ID, now time.Time) (identity.ID, error) {
	if len(certs) == 0 {
		return identity.ID{}, ErrNoCertificate
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if roots == nil {
		return identity.ID{}, fmt.Errorf("%w: no trust anchors", ErrUntrusted)
	}
	_, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return identity.ID{}, fmt.Errorf("%w: %w", ErrExpired, err)
		}
		return identity.ID{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.ID{}, fmt.Errorf("%w: %w", ErrBadIdentity, err)
	}
	if !want.IsZero() && id != want {
		return id, fmt.Errorf("%w: got %s, want %s", ErrWrongIdentity, id, want)
	}
	return id, nil
}

// Fingerprint is the hex SHA-256 of the concatenated DER certificates, used
// to name a trust bundle in metrics and logs.
func Fingerprint(certs []*x509.Certificate) string {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	return hex.EncodeToString(h.Sum(nil))
}
