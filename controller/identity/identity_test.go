package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// authFunc adapts a function to Authenticator.
type authFunc func(ctx context.Context, token []byte, id identity.ID) (string, error)

func (f authFunc) Authenticate(ctx context.Context, req Request) (Caller, error) {
	name, err := f(ctx, req.Token, req.ID)
	return Caller{Name: name}, err
}

// eventLog is an EventSink that remembers what it heard.
type eventLog struct{ got []string }

func (e *eventLog) Issued(id identity.ID, c Caller, _ time.Time) {
	e.got = append(e.got, "issued "+id.String()+" to "+c.Name)
}

func (e *eventLog) Refused(id identity.ID, _ Caller, reason string, _ error) {
	e.got = append(e.got, "refused "+id.String()+" "+reason)
}

// certifySetup gives a fresh CA, a key and its CSRs for any identity.
func certifySetup(t *testing.T) (*ca.CA, *ecdsa.PrivateKey, func(identity.ID) []byte) {
	t.Helper()
	authority, err := ca.LoadOrCreate(t.TempDir(), time.Now(), ca.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return authority, key, func(id identity.ID) []byte {
		der, err := pki.NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
}

// TestCertifyAuthenticator covers Certify with an Authenticator (Kubernetes
// mode): no store, refusals mapped to reasons and codes, and a certificate
// with the configured lifetime when the authenticator accepts.
func TestCertifyAuthenticator(t *testing.T) {
	authority, _, csrFor := certifySetup(t)
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "books"}
	other := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "other"}
	// The authenticator accepts "good" for books only.
	auth := authFunc(func(_ context.Context, token []byte, id identity.ID) (string, error) {
		switch string(token) {
		case "good":
			if id != books {
				return "", &AuthError{Reason: metrics.ReasonIdentityMismatch, Err: fmt.Errorf("token is for %s", books)}
			}
			return id.KubernetesUsername(), nil
		case "down":
			return "", fmt.Errorf("%w: connection refused", ErrAuthUnavailable)
		case "plain":
			return "", errors.New("not authenticated")
		}
		return "", &AuthError{Reason: metrics.ReasonBadToken, Err: errors.New("token refused")}
	})

	for _, tc := range []struct {
		name   string
		id     identity.ID
		token  string
		csr    []byte
		code   codes.Code
		reason string
	}{
		{"accepted", books, "good", csrFor(books), codes.OK, ""},
		{"other identity", other, "good", csrFor(other), codes.PermissionDenied, metrics.ReasonIdentityMismatch},
		{"unavailable", books, "down", csrFor(books), codes.Unavailable, metrics.ReasonInternal},
		{"refused with reason", books, "bad", csrFor(books), codes.Unauthenticated, metrics.ReasonBadToken},
		{"refused plain error", books, "plain", csrFor(books), codes.Unauthenticated, metrics.ReasonBadToken},
		{"csr for another identity", books, "good", csrFor(other), codes.InvalidArgument, metrics.ReasonIdentityMismatch},
		{"bad csr", books, "good", []byte("junk"), codes.InvalidArgument, metrics.ReasonBadCSR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := metrics.New()
			ev := &eventLog{}
			s := &Service{Auth: auth, CA: authority, Metrics: m, Log: slog.New(slog.DiscardHandler), Lifetime: func() time.Duration { return time.Hour }, Events: ev}
			resp, err := s.Certify(context.Background(), &apiv1.CertifyRequest{
				Identity: tc.id.String(), Token: []byte(tc.token), CertificateSigningRequest: tc.csr,
			})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v (%v), want %v", got, err, tc.code)
			}
			wantEvent := "issued " + tc.id.String() + " to " + books.KubernetesUsername()
			if tc.code != codes.OK {
				wantEvent = "refused " + tc.id.String() + " " + tc.reason
			}
			if len(ev.got) != 1 || ev.got[0] != wantEvent {
				t.Errorf("events %q, want [%q]", ev.got, wantEvent)
			}
			if tc.code != codes.OK {
				if n := counter(t, m, tc.reason); n != 1 {
					t.Errorf("refused{reason=%q} = %v, want 1", tc.reason, n)
				}
				return
			}
			leaf, err := x509.ParseCertificate(resp.GetChain()[0])
			if err != nil {
				t.Fatal(err)
			}
			if got, err := identity.FromCertificate(leaf); err != nil || got != books {
				t.Errorf("certificate identity %v (%v), want %v", got, err, books)
			}
			if d := leaf.NotAfter.Sub(leaf.NotBefore); d > time.Hour+time.Minute*10 || d < time.Hour-time.Minute*10 {
				t.Errorf("certificate valid for %v, want about the configured hour", d)
			}
			if len(resp.GetTrustAnchors()) == 0 {
				t.Error("no trust anchors in the answer")
			}
		})
	}
}

// TestCertifyNoAuthenticator: without an Authenticator nothing is signed.
func TestCertifyNoAuthenticator(t *testing.T) {
	authority, err := ca.LoadOrCreate(t.TempDir(), time.Now(), ca.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{CA: authority, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)}
	_, err = s.Certify(context.Background(), &apiv1.CertifyRequest{Identity: "spiffe://cluster.local/ns/a/sa/b", Token: []byte("x")})
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want Internal", err)
	}
}

func counter(t *testing.T, m *metrics.Metrics, reason string) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.CertificatesRefused.WithLabelValues(reason).Write(&out); err != nil {
		t.Fatal(err)
	}
	return out.GetCounter().GetValue()
}

// keyAuth records the requests it sees and returns caller.
type keyAuth struct {
	got    []Request
	caller Caller
	err    error
}

func (k *keyAuth) Authenticate(_ context.Context, req Request) (Caller, error) {
	k.got = append(k.got, req)
	return k.caller, k.err
}

// TestCertifyRequestAndIssued: the authenticator sees the CSR's key only
// when the CSR is valid for the identity (CSR errors still come after the
// token); Issued hears of the certificate before it is returned, and its
// error refuses the call with Unavailable.
func TestCertifyRequestAndIssued(t *testing.T) {
	authority, key, csrFor := certifySetup(t)
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "books"}
	other := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "other"}
	call := func(auth Authenticator, csr []byte) (*Service, error) {
		s := &Service{Auth: auth, CA: authority, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler)}
		_, err := s.Certify(context.Background(), &apiv1.CertifyRequest{Identity: books.String(), Token: []byte("t"), CertificateSigningRequest: csr})
		return s, err
	}

	var issued *x509.Certificate
	a := &keyAuth{caller: Caller{Name: "vm", Issued: func(_ context.Context, leaf *x509.Certificate) error { issued = leaf; return nil }}}
	if _, err := call(a, csrFor(books)); err != nil {
		t.Fatal(err)
	}
	if len(a.got) != 1 || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(a.got[0].PublicKey) || a.got[0].ID != books || string(a.got[0].Token) != "t" {
		t.Errorf("request %+v, want the token, identity and CSR key", a.got)
	}
	if issued == nil || !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(issued.PublicKey) {
		t.Error("Issued did not hear of the certificate")
	}

	for _, csr := range [][]byte{[]byte("junk"), csrFor(other)} {
		a := &keyAuth{err: &AuthError{Reason: metrics.ReasonBadToken, Err: errors.New("no")}}
		if _, err := call(a, csr); status.Code(err) != codes.Unauthenticated {
			t.Errorf("refused token with a bad CSR: %v, want the token's refusal first", err)
		}
		if len(a.got) != 1 || a.got[0].PublicKey != nil {
			t.Errorf("request %+v, want no key for a CSR not valid for the identity", a.got)
		}
	}

	a = &keyAuth{err: &AuthError{Reason: metrics.ReasonBadCSR, Err: errors.New("token kept")}}
	if _, err := call(a, []byte("junk")); status.Code(err) != codes.InvalidArgument {
		t.Errorf("bad_csr refusal: %v, want InvalidArgument", err)
	}

	a = &keyAuth{caller: Caller{Name: "vm", Issued: func(context.Context, *x509.Certificate) error { return errors.New("status not written") }}}
	s, err := call(a, csrFor(books))
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Issued failure: %v, want Unavailable", err)
	}
	if n := counter(t, s.Metrics, metrics.ReasonInternal); n != 1 {
		t.Errorf("refused{reason=internal} = %v, want 1", n)
	}
	var issuedCount dto.Metric
	_ = s.Metrics.CertificatesIssued.Write(&issuedCount)
	if issuedCount.GetCounter().GetValue() != 0 {
		t.Error("a refused certificate was counted as issued")
	}
}
