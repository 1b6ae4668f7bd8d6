package ca

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// ErrIssuerNotValid is wrapped by State.Check when the issuer (or a
// certificate of its chain) is expired or not yet valid.
var ErrIssuerNotValid = errors.New("issuer not valid now")

// errNotChained is wrapped by parseMaterial when the issuer does not chain
// to an anchor of the bundle.
var errNotChained = errors.New("issuer not trusted by the bundle")

// maxFileSize bounds every CA file read: certificates and keys are small,
// and a huge file is a mistake, not something to hold in memory.
const maxFileSize = 1 << 20

// material is the raw content of the three inputs of a CA state, with the
// names they were read from (for messages).
type material struct {
	certName, keyName, bundleName string
	cert, key, bundle             []byte
}

// digest identifies the content, to skip re-validating unchanged files.
func (m material) digest() [32]byte {
	h := sha256.New()
	for _, part := range [][]byte{[]byte(m.bundleName), m.cert, m.key, m.bundle} {
		// Length-prefix each part so different splits never collide.
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// State is one consistent, validated set of issuer and trust bundle. It is
// immutable: a reload installs a new State.
type State struct {
	// Issuer signs workload certificates; Issuer.Chain holds the
	// intermediates between it and the anchor it chains to.
	Issuer *pki.Issuer
	// Anchors is the trust bundle, in file order.
	Anchors []*x509.Certificate
	// AnchorsDER is Anchors as DER, as sent in CertifyResponse.trust_anchors.
	AnchorsDER [][]byte
	// Pool holds Anchors.
	Pool *x509.CertPool
	// ChainAnchor is the anchor of the bundle the issuer chains to.
	ChainAnchor *x509.Certificate
	// Fingerprint names the bundle (pki.Fingerprint of Anchors).
	Fingerprint string
	// Source says where the files are, for messages.
	Source string

	// The issuer can sign while every certificate of its chain is valid.
	validFrom, validUntil time.Time
	hint                  string
	digest                [32]byte
}

// Check returns nil when the issuer may sign at now, else an error wrapping
// ErrIssuerNotValid that says what expired and what to do.
func (s *State) Check(now time.Time) error {
	name := s.Issuer.Cert.Subject.String()
	switch {
	case now.After(s.validUntil):
		return fmt.Errorf("%w: not signing: the issuer %q (from %s) or its chain expired at %s; %s",
			ErrIssuerNotValid, name, s.Source, s.validUntil.UTC().Format(time.RFC3339), s.hint)
	case now.Before(s.validFrom):
		return fmt.Errorf("%w: not signing: the issuer %q (from %s) or its chain is not valid before %s (check the clock); %s",
			ErrIssuerNotValid, name, s.Source, s.validFrom.UTC().Format(time.RFC3339), s.hint)
	}
	return nil
}

// ValidUntil is when the issuer's chain stops being usable: the earliest
// expiry among the issuer, its intermediates and its anchor.
func (s *State) ValidUntil() time.Time { return s.validUntil }

// AnchorExpiry is the expiry of the earliest-expiring anchor of the bundle.
func (s *State) AnchorExpiry() time.Time {
	var t time.Time
	for i, a := range s.Anchors {
		if i == 0 || a.NotAfter.Before(t) {
			t = a.NotAfter
		}
	}
	return t
}

type publicKeyEqualer interface {
	Equal(crypto.PublicKey) bool
}

// parseMaterial checks that m is a usable CA state: the certificate file
// starts with a CA certificate (then optional intermediates), the key is
// its private key, the bundle holds only CA certificates, and the issuer
// chains to one of them. Validity in time is not required here: an expired
// issuer is structurally fine, State.Check tells whether it may sign.
func parseMaterial(m material, now time.Time) (*State, error) {
	certs, err := pki.ParseCertsPEM(m.cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.certName, err)
	}
	issuer := certs[0]
	if !issuer.BasicConstraintsValid || !issuer.IsCA {
		return nil, fmt.Errorf("%s: the first certificate (%q) is not a CA certificate", m.certName, issuer.Subject.String())
	}
	if issuer.KeyUsage != 0 && issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: the first certificate (%q) may not sign certificates (no certSign key usage)", m.certName, issuer.Subject.String())
	}
	key, err := pki.ParseKeyPEM(m.key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.keyName, err)
	}
	if pub, ok := key.Public().(publicKeyEqualer); !ok || !pub.Equal(issuer.PublicKey) {
		return nil, fmt.Errorf("%s does not match the public key of the issuer certificate in %s", m.keyName, m.certName)
	}
	anchors, err := pki.ParseCertsPEM(m.bundle)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.bundleName, err)
	}
	pool := x509.NewCertPool()
	der := make([][]byte, 0, len(anchors))
	for i, a := range anchors {
		if !a.BasicConstraintsValid || !a.IsCA {
			return nil, fmt.Errorf("%s: certificate %d (%q) is not a CA certificate", m.bundleName, i+1, a.Subject.String())
		}
		pool.AddCert(a)
		der = append(der, a.Raw)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	verify := func(at time.Time) ([][]*x509.Certificate, error) {
		return issuer.Verify(x509.VerifyOptions{
			Roots: pool, Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
	}
	// A chain valid now is preferred; failing that, the structure is checked
	// in the middle of the issuer's validity, so that an expired issuer is
	// told apart from an untrusted one.
	chains, err := verify(now)
	if err != nil {
		mid := issuer.NotBefore.Add(issuer.NotAfter.Sub(issuer.NotBefore) / 2)
		chains, err = verify(mid)
	}
	if err != nil {
		return nil, fmt.Errorf("%s (%q, issued by %q) does not chain to any anchor of %s: %w: %w",
			m.certName, issuer.Subject.String(), issuer.Issuer.String(), m.bundleName, errNotChained, err)
	}
	chain := chains[0]
	st := &State{
		Issuer:      &pki.Issuer{Cert: issuer, Key: key},
		Anchors:     anchors,
		AnchorsDER:  der,
		Pool:        pool,
		ChainAnchor: chain[len(chain)-1],
		Fingerprint: pki.Fingerprint(anchors),
		digest:      m.digest(),
	}
	if len(chain) > 2 {
		// Only the intermediates actually on the path are sent to peers.
		st.Issuer.Chain = chain[1 : len(chain)-1]
	}
	for i, c := range chain {
		if i == 0 || c.NotBefore.After(st.validFrom) {
			st.validFrom = c.NotBefore
		}
		if i == 0 || c.NotAfter.Before(st.validUntil) {
			st.validUntil = c.NotAfter
		}
	}
	return st, nil
}
