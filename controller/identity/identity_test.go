package identity

import (
	"context"
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

func (f authFunc) Authenticate(ctx context.Context, token []byte, id identity.ID) (Caller, error) {
	name, err := f(ctx, token, id)
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

// TestCertifyAuthenticator covers Certify with an Authenticator (Kubernetes
// mode): no store, refusals mapped to reasons and codes, and a certificate
// with the configured lifetime when the authenticator accepts.
func TestCertifyAuthenticator(t *testing.T) {
	authority, err := ca.LoadOrCreate(t.TempDir(), time.Now(), ca.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "books"}
	other := identity.ID{TrustDomain: "cluster.local", Namespace: "shop", ServiceAccount: "other"}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csrFor := func(id identity.ID) []byte {
		der, err := pki.NewCSR(key, id)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
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
