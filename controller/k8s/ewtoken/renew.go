package ewtoken

import (
	"context"
	"crypto"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// renew authenticates a renewal: the caller proves possession of its
// current certificate's key in the TLS handshake of this call. The
// certificate must verify against the current anchors now, be of the
// identity asked for, have the key the workload's status recorded at
// bootstrap, and the CSR must keep that key. Deleting the workload, or
// redeeming a new token with another key, therefore ends renewals.
func (a *Authenticator) renew(ctx context.Context, req identitysvc.Request) (identitysvc.Caller, error) {
	if err := a.checkDomain(req.ID); err != nil {
		return identitysvc.Caller{}, err
	}
	ns, name, err := ewtoken.ParseRenew(req.Token)
	if err != nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadToken, err)
	}
	ref := ewtoken.Ref(ns, name)
	if req.ID.Namespace != ns {
		return identitysvc.Caller{}, refusal(metrics.ReasonIdentityMismatch, fmt.Errorf("externalworkload %s cannot have identity %s", ref, req.ID))
	}
	if req.PublicKey == nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadCSR, errors.New("the certificate signing request is not valid for the identity asked for"))
	}
	leaf, err := a.peerLeaf(ctx, req.ID)
	if err != nil {
		return identitysvc.Caller{}, err
	}
	if !samePublicKey(leaf.PublicKey, req.PublicKey) {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadClientCertificate,
			errors.New("the CSR's key is not the presented certificate's: a renewal keeps its key"))
	}
	keySHA, err := ewtoken.KeySHA256(leaf.PublicKey)
	if err != nil {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadClientCertificate, err)
	}
	ew, err := a.workload(ctx, ns, name, req.ID)
	if err != nil {
		return identitysvc.Caller{}, err
	}
	if subtle.ConstantTimeCompare([]byte(keySHA), []byte(ew.Status.KeySHA256)) != 1 {
		return identitysvc.Caller{}, refusal(metrics.ReasonBadClientCertificate, fmt.Errorf(
			"the certificate's key is not the one externalworkload %s's status records (a newer bootstrap token was redeemed, or the workload was recreated): mint a new bootstrap token and restart the workload's proxy", ref))
	}
	return identitysvc.Caller{
		Name: callerName(ns, name, "renewal"),
		// A renewal's certificate does not depend on the status (the key
		// is the same): a failed write is logged and counted, not refused,
		// unless a bootstrap replaced the key meanwhile.
		Issued: func(ctx context.Context, leaf *x509.Certificate) error {
			err := a.recordIssued(ctx, ew, keySHA, leaf.NotAfter, true)
			if errors.Is(err, errKeyReplaced) {
				return err
			}
			if err != nil {
				a.m.statusErrors.Inc()
				a.log.Warn("cannot write the status of an external workload after a renewal", "externalworkload", ref, "err", err)
			}
			return nil
		},
	}, nil
}

// peerLeaf returns the call's client certificate once its chain verified
// against the current anchors now, for exactly id. The TLS layer verified
// it at the handshake already; anchors may have rotated since.
func (a *Authenticator) peerLeaf(ctx context.Context, id identity.ID) (*x509.Certificate, error) {
	var certs []*x509.Certificate
	if p, ok := peer.FromContext(ctx); ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			certs = ti.State.PeerCertificates
		}
	}
	if len(certs) == 0 {
		return nil, refusal(metrics.ReasonBadClientCertificate,
			errors.New("a renewal must present the workload's current certificate in the TLS handshake; none was presented"))
	}
	if _, err := pki.VerifyCerts(certs, a.cfg.Anchors(), x509.ExtKeyUsageClientAuth, id, a.cfg.Now()); err != nil {
		if errors.Is(err, pki.ErrWrongIdentity) {
			return nil, refusal(metrics.ReasonIdentityMismatch, fmt.Errorf("presented certificate: %w", err))
		}
		return nil, refusal(metrics.ReasonBadClientCertificate, fmt.Errorf("presented certificate: %w", err))
	}
	return certs[0], nil
}

// samePublicKey compares keys of the standard library's types.
func samePublicKey(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}
