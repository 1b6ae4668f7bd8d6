package local

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func csrFor(t *testing.T, id identity.ID) ([]byte, *tls.Certificate) {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return der, &tls.Certificate{PrivateKey: key}
}

func TestCertifyHappyPath(t *testing.T) {
	e := startController(t, meshYAML)
	client := apiv1.NewIdentityClient(e.dial(t, nil))
	csr, cert := csrFor(t, booksID)
	before := time.Now()
	resp, err := client.Certify(context.Background(), &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV2), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Chain) != 2 {
		t.Fatalf("chain has %d certificates, want leaf and issuer", len(resp.Chain))
	}
	// Verified against the anchor.crt file, and against the returned bundle.
	for _, roots := range []*x509.CertPool{e.anchor, poolOf(t, resp.TrustAnchors)} {
		got, err := pki.Verify(resp.Chain, roots, x509.ExtKeyUsageClientAuth, booksID, time.Now())
		if err != nil || got != booksID {
			t.Fatalf("verify: %v, %v", got, err)
		}
		if _, err := pki.Verify(resp.Chain, roots, x509.ExtKeyUsageServerAuth, booksID, time.Now()); err != nil {
			t.Fatalf("verify server usage: %v", err)
		}
	}
	leaf, err := x509.ParseCertificate(resp.Chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if !resp.ValidUntil.AsTime().Equal(leaf.NotAfter) {
		t.Fatalf("valid_until %s, leaf NotAfter %s", resp.ValidUntil.AsTime(), leaf.NotAfter)
	}
	if life := leaf.NotAfter.Sub(before); life < 59*time.Minute || life > 61*time.Minute {
		t.Fatalf("lifetime %s, want the configured 1h", life)
	}
	if n := value(e.c.Metrics.CertificatesIssued); n != 1 {
		t.Fatalf("issued_total = %v", n)
	}

	// The issued certificate is accepted as a client certificate.
	cert.Certificate = resp.Chain
	conn := e.dial(t, cert)
	if _, err := apiv1.NewIdentityClient(conn).Certify(context.Background(), &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV1), CertificateSigningRequest: csr,
	}); err != nil {
		t.Fatalf("Certify with an mTLS client: %v", err)
	}
}

func poolOf(t *testing.T, ders [][]byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		pool.AddCert(c)
	}
	return pool
}

func TestCertifyRefusals(t *testing.T) {
	e := startController(t, meshYAML)
	client := apiv1.NewIdentityClient(e.dial(t, nil))
	booksCSR, _ := csrFor(t, booksID)
	webCSR, _ := csrFor(t, webID)
	key, _ := pki.GenerateKey()
	extraSAN, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{booksID.URL()}, DNSNames: []string{"books.demo.svc.cluster.local"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		id       string
		token    string
		csr      []byte
		code     codes.Code
		reason   string
		contains string
	}{
		{"wrong token", booksID.String(), tokenW, booksCSR, codes.Unauthenticated, "bad_token", "token"},
		{"no token", booksID.String(), "", booksCSR, codes.Unauthenticated, "bad_token", "no token"},
		{"unknown identity", "spiffe://cluster.local/ns/demo/sa/nobody", tokenV1, booksCSR, codes.Unauthenticated, "unknown_identity", "no workload"},
		{"other trust domain", "spiffe://evil.org/ns/demo/sa/books", tokenV1, booksCSR, codes.Unauthenticated, "unknown_identity", "no workload"},
		{"malformed identity", "books", tokenV1, booksCSR, codes.InvalidArgument, "bad_request", "spiffe://"},
		{"garbage CSR", booksID.String(), tokenV1, []byte("not a csr"), codes.InvalidArgument, "bad_csr", "signing request"},
		{"extra DNS SAN", booksID.String(), tokenV1, extraSAN, codes.InvalidArgument, "bad_csr", "DNS"},
		{"CSR for another identity", booksID.String(), tokenV1, webCSR, codes.InvalidArgument, "identity_mismatch", webID.String()},
		{"token of another identity", webID.String(), tokenV1, webCSR, codes.Unauthenticated, "bad_token", "token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := value(e.c.Metrics.CertificatesRefused.WithLabelValues(tt.reason))
			_, err := client.Certify(context.Background(), &apiv1.CertifyRequest{
				Identity: tt.id, Token: []byte(tt.token), CertificateSigningRequest: tt.csr,
			})
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code %s (%v), want %s", st.Code(), err, tt.code)
			}
			if !strings.Contains(st.Message(), tt.contains) {
				t.Fatalf("message %q does not contain %q", st.Message(), tt.contains)
			}
			for _, tok := range []string{tokenV1, tokenV2, tokenW} {
				if strings.Contains(st.Message(), tok) {
					t.Fatal("message leaks a token")
				}
			}
			if after := value(e.c.Metrics.CertificatesRefused.WithLabelValues(tt.reason)); after != before+1 {
				t.Fatalf("refused_total{reason=%q} went %v -> %v", tt.reason, before, after)
			}
		})
	}
	if n := value(e.c.Metrics.CertificatesIssued); n != 0 {
		t.Fatalf("issued_total = %v after refusals only", n)
	}
}

func TestForeignClientCertificateRejected(t *testing.T) {
	e := startController(t, meshYAML)
	// A certificate for a valid identity, but from another CA.
	root, rootKey, err := pki.NewRoot("evil", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, rootKey, "evil-issuer", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := pki.GenerateKey()
	leaf, err := is.Sign(key.Public(), booksID, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn := e.dial(t, &tls.Certificate{Certificate: is.ChainDER(leaf), PrivateKey: key})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	csr, _ := csrFor(t, booksID)
	_, err = apiv1.NewIdentityClient(conn).Certify(ctx, &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV1), CertificateSigningRequest: csr,
	})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want the handshake to fail (Unavailable)", err)
	}
}
