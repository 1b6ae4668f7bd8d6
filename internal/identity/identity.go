// Package identity holds Trellis workload identity names: the SPIFFE ID
// spiffe://<trust-domain>/ns/<namespace>/sa/<service-account> and its DNS
// form <sa>.<ns>.serviceaccount.identity.<trust-domain>, used as TLS SNI.
package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DefaultTrustDomain is used when none is configured.
const DefaultTrustDomain = "cluster.local"

// ControllerNamespace and ControllerServiceAccount name the control plane's own identity.
const (
	ControllerNamespace      = "trellis-system"
	ControllerServiceAccount = "trellis-controller"
)

// ID is a workload identity.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// New returns the identity of a service account in a trust domain.
func New(trustDomain, namespace, serviceAccount string) (ID, error) {
	id := ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAccount}
	return id, id.Validate()
}

// Controller returns the control plane's identity in a trust domain.
func Controller(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: ControllerNamespace, ServiceAccount: ControllerServiceAccount}
}

// Validate checks that every part is a valid DNS name piece, so the SPIFFE
// and DNS forms can both be built and parsed back unambiguously.
func (id ID) Validate() error {
	if err := validDomain(id.TrustDomain); err != nil {
		return fmt.Errorf("trust domain %q: %w", id.TrustDomain, err)
	}
	if err := validLabel(id.Namespace); err != nil {
		return fmt.Errorf("namespace %q: %w", id.Namespace, err)
	}
	if err := validSegment(id.ServiceAccount); err != nil {
		return fmt.Errorf("service account %q: %w", id.ServiceAccount, err)
	}
	return nil
}

// IsZero reports whether id is the empty identity.
func (id ID) IsZero() bool { return id == ID{} }

// String returns the SPIFFE ID.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the SPIFFE ID as a URL, the form put in a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// ServerName returns the DNS form sent as SNI by a client proxy.
func (id ID) ServerName() string {
	return id.ServiceAccount + "." + id.Namespace + ".serviceaccount.identity." + id.TrustDomain
}

// KubernetesUsername is the name a ServiceAccount token authenticates as.
func (id ID) KubernetesUsername() string {
	return "system:serviceaccount:" + id.Namespace + ":" + id.ServiceAccount
}

// Parse parses a SPIFFE ID of the form spiffe://td/ns/NS/sa/SA.
func Parse(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("identity %q: not a spiffe:// URI", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "ns" || parts[3] != "sa" {
		return ID{}, fmt.Errorf("identity %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	id := ID{TrustDomain: parts[0], Namespace: parts[2], ServiceAccount: parts[4]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("identity %q: %w", s, err)
	}
	return id, nil
}

// ParseServerName parses the DNS form <sa>.<ns>.serviceaccount.identity.<td>.
func ParseServerName(name string) (ID, error) {
	sa, rest, ok1 := strings.Cut(name, ".")
	ns, rest, ok2 := strings.Cut(rest, ".")
	td, ok3 := strings.CutPrefix(rest, "serviceaccount.identity.")
	if !ok1 || !ok2 || !ok3 {
		return ID{}, fmt.Errorf("server name %q: want <sa>.<ns>.serviceaccount.identity.<trust-domain>", name)
	}
	id := ID{TrustDomain: td, Namespace: ns, ServiceAccount: sa}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("server name %q: %w", name, err)
	}
	return id, nil
}

// FromCertificate returns the identity in a certificate, which must carry
// exactly one URI SAN, a valid SPIFFE ID. DNS, IP and e-mail SANs are not
// identities in Trellis and make the certificate unacceptable.
func FromCertificate(cert *x509.Certificate) (ID, error) {
	if len(cert.DNSNames)+len(cert.IPAddresses)+len(cert.EmailAddresses) > 0 {
		return ID{}, errors.New("certificate has DNS, IP or e-mail SANs; a workload certificate carries only its SPIFFE ID")
	}
	if len(cert.URIs) != 1 {
		return ID{}, fmt.Errorf("certificate has %d URI SANs, want exactly one SPIFFE ID", len(cert.URIs))
	}
	return Parse(cert.URIs[0].String())
}

func validLabel(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 63 {
		return errors.New("longer than 63 characters")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("invalid character %q at %d (lower-case letters, digits and inner '-' only)", c, i)
		}
	}
	return nil
}

// validSegment allows the ServiceAccount name rules (DNS subdomain) but no
// dots, so the DNS form stays parseable.
func validSegment(s string) error { return validLabel(s) }

// ValidateTrustDomain reports why td cannot be a trust domain (DNS labels,
// at most 253 characters), or nil.
func ValidateTrustDomain(td string) error { return validDomain(td) }

// CheckAccepted reports why td cannot be accepted beside the local trust
// domain (another cluster's, under the same anchors): it is not a trust
// domain, or it is local itself. The proxy, the injector and the install
// check the same.
func CheckAccepted(td, local string) error {
	if err := validDomain(td); err != nil {
		return fmt.Errorf("accepted trust domain %q: %w", td, err)
	}
	if td == local {
		return fmt.Errorf("accepted trust domain %q is the local one", td)
	}
	return nil
}

func validDomain(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, l := range strings.Split(s, ".") {
		if err := validLabel(l); err != nil {
			return err
		}
	}
	return nil
}
