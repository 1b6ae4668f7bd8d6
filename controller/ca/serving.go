package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// ServingLifetime is the lifetime of the controller's own certificate; it
// is renewed at RenewFraction of it.
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
}

// NewServingCert issues the first certificate for id. onIssue, if not nil,
// is called with each new certificate's expiry (for metrics).
func NewServingCert(c *CA, id identity.ID, lifetime time.Duration, log *slog.Logger, onIssue func(time.Time)) (*ServingCert, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if onIssue == nil {
		onIssue = func(time.Time) {}
	}
	s := &ServingCert{ca: c, id: id, lifetime: lifetime, log: log, onIssue: onIssue}
	if err := s.renew(time.Now()); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *ServingCert) renew(now time.Time) error {
	key, err := pki.GenerateKey()
	if err != nil {
		return err
	}
	is := s.ca.Issuer()
	leaf, err := is.Sign(key.Public(), s.id, s.lifetime, now)
	if err != nil {
		return fmt.Errorf("controller certificate: %w", err)
	}
	cert := &tls.Certificate{Certificate: is.ChainDER(leaf), PrivateKey: key, Leaf: leaf}
	s.mu.Lock()
	s.cert, s.leaf = cert, leaf
	s.mu.Unlock()
	s.onIssue(leaf.NotAfter)
	s.log.Info("issued the controller's serving certificate", "identity", s.id.String(), "expiry", leaf.NotAfter.Format(time.RFC3339))
	return nil
}

// Leaf returns the current certificate.
func (s *ServingCert) Leaf() *x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.leaf
}

// GetCertificate is a tls.Config hook returning the current certificate.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cert, nil
}

// Run renews the certificate at RenewFraction of its lifetime until ctx is
// done; failures are retried every minute while the old one is still used.
func (s *ServingCert) Run(ctx context.Context) {
	for {
		leaf := s.Leaf()
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		wait := time.Until(leaf.NotBefore.Add(time.Duration(float64(life) * RenewFraction)))
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		for {
			err := s.renew(time.Now())
			if err == nil {
				break
			}
			s.log.Error("cannot renew the controller's serving certificate; retrying", "err", err, "expiry", leaf.NotAfter.Format(time.RFC3339))
			t := time.NewTimer(renewRetry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}
}

// ServerTLSConfig returns the gRPC server's TLS settings: TLS 1.3 only, the
// serving certificate, and client certificates verified against the anchor
// when given (a proxy has none before its first Certify). A client
// certificate must also carry a SPIFFE identity of trustDomain.
func (c *CA) ServerTLSConfig(s *ServingCert, trustDomain string) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      c.pool,
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
}
