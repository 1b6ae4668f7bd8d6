package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Errors of CheckIssuer, so callers and tests can tell failures apart.
var (
	ErrIssuerNotCA     = errors.New("issuer is not a CA certificate")
	ErrIssuerExpired   = errors.New("issuer is expired or not yet valid")
	ErrIssuerUntrusted = errors.New("issuer does not chain to any anchor of the bundle")
	ErrKeyMismatch     = errors.New("private key does not match the certificate")
)

// Warning thresholds used by `trellis identity verify` (and `trellis check`).
const (
	IssuerWarnBefore = 7 * 24 * time.Hour
	AnchorWarnBefore = 30 * 24 * time.Hour
)

// IssuerCheck is the outcome of a successful CheckIssuer.
type IssuerCheck struct {
	Anchor         *x509.Certificate // the anchor of the bundle the issuer chains to
	IssuerTimeLeft time.Duration
	AnchorTimeLeft time.Duration
	Warnings       []string // expiring soon: still valid, but act now
}

// CheckIssuer checks that issuer can sign workload certificates that peers
// trusting anchors accept: it is a CA allowed to sign certificates, it is
// valid at now, it chains to one of anchors, and key (when not nil) is its
// private key.
func CheckIssuer(issuer *x509.Certificate, key crypto.Signer, anchors []*x509.Certificate, now time.Time) (IssuerCheck, error) {
	var res IssuerCheck
	if !issuer.BasicConstraintsValid || !issuer.IsCA {
		return res, fmt.Errorf("%w: %q has no CA basic constraint", ErrIssuerNotCA, issuer.Subject.String())
	}
	if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return res, fmt.Errorf("%w: %q lacks the certificate-signing key usage", ErrIssuerNotCA, issuer.Subject.String())
	}
	if now.After(issuer.NotAfter) {
		return res, fmt.Errorf("%w: %q EXPIRED at %s (%s ago)", ErrIssuerExpired, issuer.Subject.String(),
			issuer.NotAfter.UTC().Format(time.RFC3339), now.Sub(issuer.NotAfter).Round(time.Second))
	}
	if now.Before(issuer.NotBefore) {
		return res, fmt.Errorf("%w: %q not valid before %s", ErrIssuerExpired, issuer.Subject.String(), issuer.NotBefore.UTC().Format(time.RFC3339))
	}
	if len(anchors) == 0 {
		return res, fmt.Errorf("%w: the bundle holds no anchors", ErrIssuerUntrusted)
	}
	pool := x509.NewCertPool()
	for _, a := range anchors {
		pool.AddCert(a)
	}
	chains, err := issuer.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return res, fmt.Errorf("%w: %q (issued by %q): %w", ErrIssuerUntrusted, issuer.Subject.String(), issuer.Issuer.String(), err)
	}
	chain := chains[0]
	res.Anchor = chain[len(chain)-1]
	if key != nil {
		if err := KeyMatchesCert(key, issuer); err != nil {
			return res, fmt.Errorf("%w: %w", ErrKeyMismatch, err)
		}
	}
	res.IssuerTimeLeft = issuer.NotAfter.Sub(now)
	res.AnchorTimeLeft = res.Anchor.NotAfter.Sub(now)
	if res.IssuerTimeLeft < IssuerWarnBefore {
		res.Warnings = append(res.Warnings, fmt.Sprintf("issuer %q expires in %s (at %s): replace it now",
			issuer.Subject.String(), res.IssuerTimeLeft.Round(time.Second), issuer.NotAfter.UTC().Format(time.RFC3339)))
	}
	if res.AnchorTimeLeft < AnchorWarnBefore {
		res.Warnings = append(res.Warnings, fmt.Sprintf("anchor %q expires in %s (at %s): rotate it now (trellis identity rotate)",
			res.Anchor.Subject.String(), res.AnchorTimeLeft.Round(time.Second), res.Anchor.NotAfter.UTC().Format(time.RFC3339)))
	}
	return res, nil
}
