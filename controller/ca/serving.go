package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// ServingLifetime is the lifetime of the controller's own certificate; it
// is renewed at RenewFraction of it, and at once when the issuer changes.
const (
	ServingLifetime = 24 * time.Hour
	RenewFraction   = 0.7
	renewRetry      = time.Minute
)

// ServingCert is the controller's TLS certificate, issued by the CA for the
// controller identity. Its key lives in memory only.
type ServingCert struct {
	ca       *CA
	id       identity.ID
	lifetime time.Duration
	log      *slog.Logger
	onIssue  func(notAfter time.Time)

	mu   sync.RWMutex
	cert *tls.Certificate
	leaf *x509.Certificate
	from *State // the State that issued cert
}

// NewServingCert issues the first certificate for id. When the issuer
// cannot sign (expired) there is none until a valid issuer is installed:
// handshakes fail meanwhile, as any certificate from that issuer would be
// refused by proxies anyway. onIssue, if not nil, is called with each new
// certificate's expiry (for metrics).
func NewServingCert(c *CA, id identity.ID, lifetime time.Duration, log *slog.Logger, onIssue func(time.Time)) (*ServingCert, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onIssue == nil {
		onIssue = func(time.Time) {}
	}
	s := &ServingCert{ca: c, id: id, lifetime: lifetime, log: log, onIssue: onIssue}
	if err := s.renew(time.Now()); err != nil && !errors.Is(err, ErrIssuerNotValid) {
		return nil, err
	}
	return s, nil
}

func (s *ServingCert) renew(now time.Time) error {
	st := s.ca.State()
	if err := st.Check(now); err != nil {
		return fmt.Errorf("controller certificate: %w", err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	leaf, err := st.Issuer.Sign(key.Public(), s.id, s.lifetime, now)
	if err != nil {
		return fmt.Errorf("controller certificate: %w", err)
	}
	cert := &tls.Certificate{Certificate: st.Issuer.ChainDER(leaf), PrivateKey: key, Leaf: leaf}
	s.mu.Lock()
	s.cert, s.leaf, s.from = cert, leaf, st
	s.mu.Unlock()
	s.onIssue(leaf.NotAfter)
	s.log.Info("issued the controller's serving certificate", "identity", s.id.String(), "expiry", leaf.NotAfter.UTC().Format(time.RFC3339),
		"issuer", st.Issuer.Cert.Subject.String())
	return nil
}

// Leaf returns the current certificate, nil before the first one.
func (s *ServingCert) Leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leaf
}

// GetCertificate is a tls.Config hook returning the current certificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cert == nil {
		return nil, errors.New("the controller has no serving certificate: its issuer cannot sign")
	}
	return s.cert, nil
}

// Run renews the certificate at RenewFraction of its lifetime, and at once
// when the CA installs a new State, until ctx is done. Failures are retried
// every minute (or on the next State) while the old certificate is used.
func (s *ServingCert) Run(ctx context.Context) {
	for {
		st, changed := s.ca.Current()
		s.mu.RLock()
		leaf, from := s.leaf, s.from
		s.mu.RUnlock()

		var due <-chan time.Time
		var t *time.Timer
		switch {
		case leaf == nil || from != st:
			// Issued by a replaced State (or never): renew now.
			t = time.NewTimer(0)
		case !leaf.NotAfter.Before(st.ValidUntil()):
			// Already cut to the issuer's expiry: renewing cannot extend it,
			// only a new State can.
		default:
			life := leaf.NotAfter.Sub(leaf.NotBefore)
			t = time.NewTimer(max(time.Until(leaf.NotBefore.Add(time.Duration(float64(life)*RenewFraction))), 0))
		}
		if t != nil {
			due = t.C
		}
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return
		case <-changed:
			if t != nil {
				t.Stop()
			}
			continue
		case <-due:
		}
		if err := s.renew(time.Now()); err != nil {
			s.log.Error("cannot renew the controller's serving certificate; retrying", "err", err)
			r := time.NewTimer(renewRetry)
			select {
			case <-ctx.Done():
				r.Stop()
				return
			case <-changed:
				r.Stop()
			case <-r.C:
			}
		}
	}
}

// ServerTLSConfig returns the gRPC server's TLS settings: TLS 1.3 only, the
// serving certificate, and client certificates verified against the trust
// bundle current at handshake time when given (a proxy has none before its
// first Certify). A client certificate must also carry a SPIFFE identity
// of trustDomain.
func (c *CA) ServerTLSConfig(s *ServingCert, trustDomain string) *tls.Config {
	perHandshake := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		// A resumed session would skip verification against the current
		// bundle; proxies keep long-lived connections, so resumption buys
		// little.
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			id, err := identity.FromCertificate(cs.PeerCertificates[0])
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			if id.TrustDomain != trustDomain {
				return fmt.Errorf("client identity %s is not in trust domain %s", id, trustDomain)
			}
			return nil
		},
	}
	base := perHandshake.Clone()
	base.ClientCAs = c.State().Pool
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		cfg := perHandshake.Clone()
		cfg.ClientCAs = c.State().Pool
		return cfg, nil
	}
	return base
}
