package pki

import (
	"crypto"
	"crypto/x509"
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
	if err := identity.ValidateTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("trust domain: %w", err)
	}
	return newIssuer(parent, parentKey, commonName, validity, now, func(tmpl *x509.Certificate) {
		tmpl.URIs = []*url.URL{{Scheme: "spiffe", Host: trustDomain}}
		tmpl.PermittedURIDomains = []string{trustDomain}
	})
}
