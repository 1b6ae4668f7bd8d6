package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// NewTrustDomainIssuer is NewIssuer for an issuer bound to one trust
// domain: it carries the trust domain's SPIFFE ID (spiffe://<td>) as URI
// SAN and a URI name constraint permitting only that domain, so even a
// leaked issuer key cannot mint identities another trust domain's peers
// would accept under the same anchor.
func NewTrustDomainIssuer(parent *x509.Certificate, parentKey crypto.Signer, commonName, trustDomain string, validity time.Duration, now time.Time) (*Issuer, error) {
	// Validate the trust domain the same way identities do.
	if _, err := identity.New(trustDomain, "ns", "sa"); err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
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
		URIs:                  []*url.URL{{Scheme: "spiffe", Host: trustDomain}},
		PermittedURIDomains:   []string{trustDomain},
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
