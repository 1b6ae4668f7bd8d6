// Package identity serves Identity.Certify: a workload proves who it is
// with a token and gets a short-lived certificate for its SPIFFE ID signed
// by the current issuer, with the current trust bundle. An Authenticator
// vouches for the token: in local mode the store file's workload tokens
// (controller/local), in Kubernetes mode a TokenReview of the pod's
// projected ServiceAccount token, or an external workload's bootstrap
// token or current certificate (controller/k8s/ewtoken); the service
// knows none of them. An issuer that cannot sign (expired) is never used.
package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Authenticator decides whether a token proves the right to an identity.
// It is how Kubernetes mode plugs in its TokenReview check without this
// package knowing about Kubernetes.
type Authenticator interface {
	// Authenticate returns who the request's token proved to be, or an
	// error: ErrAuthUnavailable (wrapped) when the check could not be
	// made, an *AuthError for a refusal with a specific reason, anything
	// else for a token that does not authenticate. Errors must never
	// contain the token.
	Authenticate(ctx context.Context, req Request) (Caller, error)
}

// Request is what an Authenticator judges.
type Request struct {
	Token []byte
	// ID is the identity asked for (well formed).
	ID identity.ID
	// PublicKey is the key of the request's CSR, nil when the CSR is not
	// valid for ID: Certify refuses it once the token is checked (so an
	// unauthenticated caller learns nothing from CSR errors), and a
	// single-use credential must not be spent on it.
	PublicKey crypto.PublicKey
}

// Caller is who a token proved to be.
type Caller struct {
	// Name is for logs and events, e.g. "system:serviceaccount:NS:SA (pod P)".
	Name string
	// UID of the ServiceAccount, when the authenticator knows it, so an
	// event can name the exact object (kubectl describe matches on it).
	UID string
	// Issued, when set, hears of the signed certificate before Certify
	// returns it (an external workload's status records its key). An
	// error refuses the call with Unavailable: the authenticator decides
	// which failures matter, and may log others and return nil.
	Issued func(ctx context.Context, leaf *x509.Certificate) error
}

// EventSink is told of every certificate issued and of every refusal of a
// well-formed identity (Kubernetes Events on the ServiceAccount). Calls
// must not block: Certify makes them inline.
type EventSink interface {
	Issued(id identity.ID, caller Caller, notAfter time.Time)
	Refused(id identity.ID, caller Caller, reason string, err error)
}

// ErrAuthUnavailable marks an Authenticator failure that says nothing about
// the token (the API server could not be reached): the caller gets
// Unavailable and retries.
var ErrAuthUnavailable = errors.New("authentication unavailable")

// AuthError is an Authenticator's refusal with the reason label of
// trellis_controller_certificates_refused_total.
type AuthError struct {
	// Reason is one of metrics.Reason*; metrics.ReasonIdentityMismatch
	// (a valid token for another identity) maps to PermissionDenied,
	// metrics.ReasonBadCSR to InvalidArgument, anything else to
	// Unauthenticated.
	Reason string
	Err    error
}

func (e *AuthError) Error() string { return e.Err.Error() }
func (e *AuthError) Unwrap() error { return e.Err }

// authRefusal maps an Authenticator error to a metric reason and a gRPC
// code.
func authRefusal(err error) (string, codes.Code) {
	if errors.Is(err, ErrAuthUnavailable) {
		return metrics.ReasonInternal, codes.Unavailable
	}
	var ae *AuthError
	if errors.As(err, &ae) && ae.Reason != "" {
		switch ae.Reason {
		case metrics.ReasonIdentityMismatch:
			return ae.Reason, codes.PermissionDenied
		case metrics.ReasonBadCSR:
			// A credential kept unspent because the CSR is not valid.
			return ae.Reason, codes.InvalidArgument
		}
		return ae.Reason, codes.Unauthenticated
	}
	return metrics.ReasonBadToken, codes.Unauthenticated
}

// MaxTokenBytes bounds a Certify token (a projected ServiceAccount token
// is 1-2 KiB): nothing larger reaches an Authenticator.
const MaxTokenBytes = 16 << 10

// Service implements apiv1.IdentityServer.
type Service struct {
	apiv1.UnimplementedIdentityServer

	// Auth authenticates callers (required).
	Auth Authenticator
	// Events, when set, hears of issuances and refusals.
	Events EventSink
	// Lifetime returns the lifetime of the next certificate (local mode
	// reads it from the store file, which may change); nil, or a result
	// of 0 or less, means pki.DefaultWorkloadLifetime.
	Lifetime func() time.Duration
	CA       *ca.CA
	Metrics  *metrics.Metrics
	Log      *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Certify authenticates the caller with its token, checks the CSR and signs
// a certificate for the requested identity.
func (s *Service) Certify(ctx context.Context, req *apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	c := &call{s: s, log: s.Log.With("identity", req.GetIdentity())}
	if p, ok := peer.FromContext(ctx); ok {
		c.log = c.log.With("peer", p.Addr.String())
	}
	if len(req.GetToken()) > MaxTokenBytes {
		return nil, c.refuse(metrics.ReasonBadRequest, codes.InvalidArgument, "token of %d bytes: at most %d", len(req.GetToken()), MaxTokenBytes)
	}
	id, err := identity.Parse(req.GetIdentity())
	if err != nil {
		return nil, c.refuse(metrics.ReasonBadRequest, codes.InvalidArgument, "requested identity: %v", err)
	}
	c.id, c.parsed = id, true
	if s.Auth == nil {
		return nil, c.refuse(metrics.ReasonInternal, codes.Internal, "no authenticator configured")
	}
	// The CSR is parsed first so that the authenticator sees its key, but
	// its errors are reported after the token is checked.
	csr, csrID, csrErr := pki.ParseCSR(req.GetCertificateSigningRequest())
	areq := Request{Token: req.GetToken(), ID: id}
	if csrErr == nil && csrID == id {
		areq.PublicKey = csr.PublicKey
	}
	if c.caller, err = s.Auth.Authenticate(ctx, areq); err != nil {
		reason, code := authRefusal(err)
		return nil, c.refuse(reason, code, "identity %s: %v", id, err)
	}
	c.log = c.log.With("caller", c.caller.Name)
	if csrErr != nil {
		return nil, c.refuse(metrics.ReasonBadCSR, codes.InvalidArgument, "certificate signing request: %v", csrErr)
	}
	if csrID != id {
		return nil, c.refuse(metrics.ReasonIdentityMismatch, codes.InvalidArgument, "certificate signing request is for %s, but the request asks for %s", csrID, id)
	}
	return c.issue(ctx, csr.PublicKey, now)
}

// call is one Certify: what its refusals are reported with.
type call struct {
	s      *Service
	log    *slog.Logger
	id     identity.ID
	parsed bool // id is well formed: refusals can be reported on it
	caller Caller
}

func (c *call) refuse(reason string, code codes.Code, msg string, args ...any) error {
	c.s.Metrics.CertificatesRefused.WithLabelValues(reason).Inc()
	err := status.Errorf(code, msg, args...)
	c.log.Warn("certificate refused", "reason", reason, "err", err)
	if c.parsed && c.s.Events != nil {
		c.s.Events.Refused(c.id, c.caller, reason, err)
	}
	return err
}

// issue signs the certificate of an authenticated call.
func (c *call) issue(ctx context.Context, pub crypto.PublicKey, now time.Time) (*apiv1.CertifyResponse, error) {
	s := c.s
	lifetime := pki.DefaultWorkloadLifetime
	if s.Lifetime != nil && s.Lifetime() > 0 {
		lifetime = s.Lifetime()
	}
	// One snapshot for the whole answer: the chain and the trust anchors
	// always come from the same reload.
	st := s.CA.State()
	if err := st.Check(now); err != nil {
		return nil, c.refuse(metrics.ReasonIssuerExpired, codes.FailedPrecondition, "%v", err)
	}
	leaf, err := st.Issuer.Sign(pub, c.id, lifetime, now)
	if err != nil {
		return nil, c.refuse(metrics.ReasonInternal, codes.Internal, "sign: %v", err)
	}
	if c.caller.Issued != nil {
		if err := c.caller.Issued(ctx, leaf); err != nil {
			return nil, c.refuse(metrics.ReasonInternal, codes.Unavailable, "record the issued certificate: %v", err)
		}
	}
	s.Metrics.CertificatesIssued.Inc()
	c.log.Info("certificate issued", "serial", leaf.SerialNumber.Text(16), "expiry", leaf.NotAfter.UTC().Format(time.RFC3339))
	if s.Events != nil {
		s.Events.Issued(c.id, c.caller, leaf.NotAfter)
	}
	return &apiv1.CertifyResponse{
		Chain:        st.Issuer.ChainDER(leaf),
		ValidUntil:   timestamppb.New(leaf.NotAfter),
		TrustAnchors: st.AnchorsDER,
	}, nil
}
