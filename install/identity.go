package install

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Defaults for generated material.
const (
	DefaultAnchorValidity  = 10 * 365 * 24 * time.Hour
	DefaultIssuerValidity  = 365 * 24 * time.Hour
	DefaultWebhookValidity = 365 * 24 * time.Hour
	// WebhookRenewBefore: upgrade replaces a webhook certificate that
	// expires sooner than this.
	WebhookRenewBefore = 30 * 24 * time.Hour
	anchorName         = "trellis-anchor"
	issuerName         = "trellis-issuer"
	webhookCAName      = "trellis-webhook-ca"
	// ServiceName is the controller's Service, which the webhook calls.
	ServiceName = "trellis-controller"
)

// Identity is the mesh's trust material as the chart takes it, PEM.
type Identity struct {
	TrustAnchorsPEM []byte
	// IssuerCertPEM (issuer first, then intermediates) and IssuerKeyPEM
	// are empty when the issuer Secret is managed outside Trellis.
	IssuerCertPEM []byte
	IssuerKeyPEM  []byte
}

// External reports whether the issuer Secret is someone else's.
func (id Identity) External() bool { return len(id.IssuerCertPEM) == 0 }

// WebhookTLS is the injector's serving certificate and the CA the API
// server trusts for it, PEM.
type WebhookTLS struct {
	CAPEM   []byte
	CertPEM []byte
	KeyPEM  []byte
}

// GenerateIdentity makes a new trust anchor and an issuer for trustDomain
// signed by it. The anchor's key is not kept: it is needed again only to
// sign another issuer, and an install that loses it rotates the anchor
// instead (docs/install.md).
func GenerateIdentity(trustDomain string, anchorValidity, issuerValidity time.Duration, now time.Time) (Identity, error) {
	if anchorValidity <= 0 || issuerValidity <= 0 {
		return Identity{}, errors.New("validity must be positive")
	}
	anchor, anchorKey, err := pki.NewRoot(anchorName, anchorValidity, now)
	if err != nil {
		return Identity{}, err
	}
	is, err := pki.NewTrustDomainIssuer(anchor, anchorKey, issuerName, trustDomain, issuerValidity, now)
	if err != nil {
		return Identity{}, err
	}
	keyPEM, err := pki.EncodeKeyPEM(is.Key)
	if err != nil {
		return Identity{}, err
	}
	return Identity{
		TrustAnchorsPEM: pki.EncodeCertsPEM(anchor),
		IssuerCertPEM:   pki.EncodeCertsPEM(is.Cert),
		IssuerKeyPEM:    keyPEM,
	}, nil
}

// CheckIdentity checks supplied material: the anchors parse; unless the
// issuer is external, the issuer is a CA valid now that chains to one of
// the anchors and the key is its key. Warnings say what expires soon.
func CheckIdentity(id Identity, now time.Time) (warnings []string, err error) {
	anchors, err := pki.ParseCertsPEM(id.TrustAnchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	for _, a := range anchors {
		if !a.IsCA {
			return nil, fmt.Errorf("trust anchors: %q is not a CA certificate", a.Subject.CommonName)
		}
		if now.After(a.NotAfter) {
			return nil, fmt.Errorf("trust anchors: %q expired at %s", a.Subject.CommonName, a.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	if id.External() {
		if len(id.IssuerKeyPEM) > 0 {
			return nil, errors.New("an issuer key without its certificate")
		}
		return nil, nil
	}
	certs, err := pki.ParseCertsPEM(id.IssuerCertPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer certificate: %w", err)
	}
	key, err := pki.ParseKeyPEM(id.IssuerKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	// Intermediates above the issuer count as anchors for the check, as
	// the proxies get the whole chain.
	res, err := pki.CheckIssuer(certs[0], key, append(slices.Clone(anchors), certs[1:]...), now)
	if err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	return res.Warnings, nil
}

// GenerateWebhookTLS makes a CA and a serving certificate for the
// controller's Service in namespace, both valid for validity.
func GenerateWebhookTLS(namespace string, validity time.Duration, now time.Time) (WebhookTLS, error) {
	if validity <= 0 {
		return WebhookTLS{}, errors.New("webhook certificate validity must be positive")
	}
	ca, caKey, err := pki.NewRoot(webhookCAName, validity, now)
	if err != nil {
		return WebhookTLS{}, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return WebhookTLS{}, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return WebhookTLS{}, fmt.Errorf("serial number: %w", err)
	}
	names := webhookDNSNames(namespace)
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: names[2]},
		DNSNames:     names,
		NotBefore:    now.Add(-pki.ClockSkew),
		NotAfter:     ca.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return WebhookTLS{}, fmt.Errorf("create webhook certificate: %w", err)
	}
	keyPEM, err := pki.EncodeKeyPEM(key)
	if err != nil {
		return WebhookTLS{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return WebhookTLS{}, fmt.Errorf("parse webhook certificate: %w", err)
	}
	return WebhookTLS{CAPEM: pki.EncodeCertsPEM(ca), CertPEM: pki.EncodeCertsPEM(leaf), KeyPEM: keyPEM}, nil
}

func webhookDNSNames(namespace string) []string {
	return []string{
		ServiceName,
		ServiceName + "." + namespace,
		ServiceName + "." + namespace + ".svc",
		ServiceName + "." + namespace + ".svc.cluster.local",
	}
}

// CheckWebhookTLS says whether existing webhook material can be kept: the
// key is the certificate's, the certificate chains to the CA, names the
// Service and is valid for at least WebhookRenewBefore more.
func CheckWebhookTLS(w WebhookTLS, namespace string, now time.Time) error {
	cas, err := pki.ParseCertsPEM(w.CAPEM)
	if err != nil {
		return fmt.Errorf("webhook CA: %w", err)
	}
	certs, err := pki.ParseCertsPEM(w.CertPEM)
	if err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	key, err := pki.ParseKeyPEM(w.KeyPEM)
	if err != nil {
		return fmt.Errorf("webhook key: %w", err)
	}
	if err := pki.KeyMatchesCert(key, certs[0]); err != nil {
		return fmt.Errorf("webhook key: %w", err)
	}
	if _, ok := key.(*ecdsa.PrivateKey); !ok {
		return errors.New("webhook key is not ECDSA")
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	_, err = certs[0].Verify(x509.VerifyOptions{
		DNSName:     webhookDNSNames(namespace)[2],
		Roots:       pool,
		CurrentTime: now.Add(WebhookRenewBefore),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("webhook certificate not usable for %s more: %w", WebhookRenewBefore, err)
	}
	return nil
}

// checkAcceptTrustDomains validates identity.acceptTrustDomains: trust
// domains, comma-separated, none of them the local one.
func checkAcceptTrustDomains(v Values, local string) error {
	x, _ := v.Get("identity.acceptTrustDomains")
	list, ok := x.(string)
	if x != nil && !ok {
		return fmt.Errorf("identity.acceptTrustDomains: want a comma-separated string of trust domains, got %T", x)
	}
	if list == "" {
		return nil
	}
	for _, td := range strings.Split(list, ",") {
		if td == local {
			return fmt.Errorf("identity.acceptTrustDomains %q: that is identity.trustDomain, accepted already", td)
		}
		if err := identity.CheckAccepted(td, local); err != nil {
			return fmt.Errorf("identity.acceptTrustDomains %q: %w", td, err)
		}
	}
	return nil
}

// trustDomainOf validates a trust domain as identities do.
func trustDomainOf(v Values) (string, error) {
	x, _ := v.Get("identity.trustDomain")
	td, _ := x.(string)
	if err := identity.ValidateTrustDomain(td); err != nil {
		return "", fmt.Errorf("identity.trustDomain %q: not a valid trust domain: %w", td, err)
	}
	return td, nil
}
