package pki

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
)

// CertInfo describes one certificate for humans and scripts.
type CertInfo struct {
	Source      string   `json:"source,omitempty"`
	Role        string   `json:"role"` // anchor (self-signed CA), issuer (other CA) or workload
	Subject     string   `json:"subject"`
	Issuer      string   `json:"issuer"`
	Serial      string   `json:"serial"`
	SPIFFEID    string   `json:"spiffeID,omitempty"`
	IdentityErr string   `json:"identityError,omitempty"` // why a workload certificate is not a valid Trellis identity
	URIs        []string `json:"uris,omitempty"`
	DNSNames    []string `json:"dnsNames,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
	Emails      []string `json:"emails,omitempty"`
	// PermittedURIDomains is the URI name constraint of a CA: the trust
	// domains it may sign identities in (empty: any).
	PermittedURIDomains []string  `json:"permittedURIDomains,omitempty"`
	KeyType             string    `json:"keyType"`
	IsCA                bool      `json:"isCA"`
	NotBefore           time.Time `json:"notBefore"`
	NotAfter            time.Time `json:"notAfter"`
	SecondsLeft         int64     `json:"secondsLeft"` // negative once expired
	Expired             bool      `json:"expired"`
	NotYetValid         bool      `json:"notYetValid,omitempty"`
	Fingerprint         string    `json:"fingerprintSHA256"`
	// SignedBy is the fingerprint of the certificate of the same input that
	// signed this one ("self" for a self-signed one, empty when the signer
	// is not in the input).
	SignedBy        string `json:"signedBy,omitempty"`
	SignedBySubject string `json:"signedBySubject,omitempty"`
}

// Describe returns one CertInfo per certificate; who signed each one is
// looked up among all of certs, by signature, not only by name.
func Describe(certs []*x509.Certificate, now time.Time) []CertInfo {
	out := make([]CertInfo, 0, len(certs))
	for _, c := range certs {
		info := CertInfo{
			Subject:     c.Subject.String(),
			Issuer:      c.Issuer.String(),
			Serial:      fmt.Sprintf("%x", c.SerialNumber),
			KeyType:     KeyType(c.PublicKey),
			IsCA:        c.BasicConstraintsValid && c.IsCA,
			NotBefore:   c.NotBefore.UTC(),
			NotAfter:    c.NotAfter.UTC(),
			SecondsLeft: int64(c.NotAfter.Sub(now) / time.Second),
			Expired:     now.After(c.NotAfter),
			NotYetValid: now.Before(c.NotBefore),
			Fingerprint: CertFingerprint(c),
			DNSNames:    c.DNSNames,
			Emails:      c.EmailAddresses,
		}
		for _, u := range c.URIs {
			info.URIs = append(info.URIs, u.String())
		}
		for _, ip := range c.IPAddresses {
			info.IPAddresses = append(info.IPAddresses, ip.String())
		}
		selfSigned := isSelfSigned(c)
		switch {
		case info.IsCA && selfSigned:
			info.Role = "anchor"
		case info.IsCA:
			info.Role = "issuer"
		default:
			info.Role = "workload"
		}
		if info.Role == "workload" {
			if id, err := identity.FromCertificate(c); err == nil {
				info.SPIFFEID = id.String()
			} else {
				info.IdentityErr = err.Error()
			}
		} else if len(c.URIs) == 1 && c.URIs[0].Scheme == "spiffe" {
			info.SPIFFEID = c.URIs[0].String() // a CA's trust domain ID
		}
		info.PermittedURIDomains = c.PermittedURIDomains
		if selfSigned {
			info.SignedBy, info.SignedBySubject = "self", info.Subject
		} else if p := FindSigner(c, certs); p != nil {
			info.SignedBy, info.SignedBySubject = CertFingerprint(p), p.Subject.String()
		}
		out = append(out, info)
	}
	return out
}

// FindSigner returns the certificate of set whose key signed c, or nil.
func FindSigner(c *x509.Certificate, set []*x509.Certificate) *x509.Certificate {
	for _, p := range set {
		if p == c || bytes.Equal(p.Raw, c.Raw) {
			continue
		}
		if !bytes.Equal(p.RawSubject, c.RawIssuer) {
			continue
		}
		if c.CheckSignatureFrom(p) == nil {
			return p
		}
	}
	return nil
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}
