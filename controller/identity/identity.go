// Package identity serves Identity.Certify in local mode: a workload proves
// who it is with the token the store file gives it, and gets a short-lived
// certificate for its SPIFFE ID signed by the current issuer, with the
// current trust bundle. An issuer that cannot sign (expired) is never used.
package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// Service implements apiv1.IdentityServer.
type Service struct {
	apiv1.UnimplementedIdentityServer

	Store   *store.Store
	CA      *ca.CA
	Metrics *metrics.Metrics
	Log     *slog.Logger
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
	log := s.Log.With("identity", req.GetIdentity())
	if p, ok := peer.FromContext(ctx); ok {
		log = log.With("peer", p.Addr.String())
	}
	refuse := func(reason string, code codes.Code, msg string, args ...any) error {
		s.Metrics.CertificatesRefused.WithLabelValues(reason).Inc()
		err := status.Errorf(code, msg, args...)
		log.Warn("certificate refused", "reason", reason, "err", err)
		return err
	}

	id, err := identity.Parse(req.GetIdentity())
	if err != nil {
		return nil, refuse(metrics.ReasonBadRequest, codes.InvalidArgument, "requested identity: %v", err)
	}
	cfg, _ := s.Store.Current()
	if len(req.GetToken()) == 0 {
		return nil, refuse(metrics.ReasonBadToken, codes.Unauthenticated, "no token: the request must carry the workload's token from the store file")
	}
	candidates := cfg.WorkloadsWithIdentity(id)
	if len(candidates) == 0 {
		return nil, refuse(metrics.ReasonUnknownIdentity, codes.Unauthenticated, "identity %s: no workload in the store file runs as it (trust domain %s)", id, cfg.TrustDomain)
	}
	// Hash both sides so the comparison takes the same time whatever the
	// lengths, and compare against every candidate so timing does not tell
	// which workload matched.
	got := sha256.Sum256(req.GetToken())
	var workload *store.WorkloadInfo
	for _, w := range candidates {
		want := sha256.Sum256([]byte(w.Token))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			workload = w
		}
	}
	if workload == nil {
		return nil, refuse(metrics.ReasonBadToken, codes.Unauthenticated, "identity %s: the token is not the one of any workload with this identity", id)
	}
	log = log.With("workload", workload.Name+"."+workload.Namespace)

	csr, csrID, err := pki.ParseCSR(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, refuse(metrics.ReasonBadCSR, codes.InvalidArgument, "certificate signing request: %v", err)
	}
	if csrID != id {
		return nil, refuse(metrics.ReasonIdentityMismatch, codes.InvalidArgument, "certificate signing request is for %s, but the request asks for %s", csrID, id)
	}

	// One snapshot for the whole answer: the chain and the trust anchors
	// always come from the same reload.
	st := s.CA.State()
	if err := st.Check(now); err != nil {
		return nil, refuse(metrics.ReasonIssuerExpired, codes.FailedPrecondition, "%v", err)
	}
	leaf, err := st.Issuer.Sign(csr.PublicKey, id, cfg.CertificateLifetime, now)
	if err != nil {
		return nil, refuse(metrics.ReasonInternal, codes.Internal, "sign: %v", err)
	}
	s.Metrics.CertificatesIssued.Inc()
	log.Info("certificate issued", "serial", leaf.SerialNumber.Text(16), "expiry", leaf.NotAfter.UTC().Format(time.RFC3339))
	return &apiv1.CertifyResponse{
		Chain:        st.Issuer.ChainDER(leaf),
		ValidUntil:   timestamppb.New(leaf.NotAfter),
		TrustAnchors: st.AnchorsDER,
	}, nil
}
