package certifier

import (
	"context"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// BenchmarkCertify is one renewal as a proxy does it: a Certify call over
// gRPC and TLS 1.3 on loopback (connection already up), the server parsing
// the CSR and signing with an ECDSA P-256 issuer, and the proxy verifying
// and installing the chain.
func BenchmarkCertify(b *testing.B) {
	e := newEnv(b, time.Hour)
	m, err := newMetrics(nil, e.store)
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.config()
	cfg.CallTimeout = defaultCallTimeout
	c := &certifier{cfg: cfg, m: m}
	if c.key, err = pki.GenerateKey(); err != nil {
		b.Fatal(err)
	}
	if c.csr, err = pki.NewCSR(c.key, workloadID); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.certify(ctx); err != nil { // connect outside the loop
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.certify(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign is the controller's share of a Certify call: parse and
// check the CSR, sign the certificate.
func BenchmarkSign(b *testing.B) {
	now := time.Now()
	root, rootKey, err := pki.NewRoot("bench root", time.Hour, now)
	if err != nil {
		b.Fatal(err)
	}
	issuer, err := pki.NewIssuer(root, rootKey, "bench issuer", time.Hour, now)
	if err != nil {
		b.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	der, err := pki.NewCSR(key, workloadID)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		csr, id, err := pki.ParseCSR(der)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := issuer.Sign(csr.PublicKey, id, 24*time.Hour, now); err != nil {
			b.Fatal(err)
		}
	}
}
