package certifier

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// ExternalWorkload is the certifier's configuration for an external
// workload (--external-workload). It has no Kubernetes credentials: the
// token file holds a single-use bootstrap token, spent by the first
// Certify; while the proxy holds a valid certificate it renews by
// presenting it, with the renewal token, on a connection of its own.
// The key lives only in this process, so a restarted proxy needs a new
// bootstrap token.
type ExternalWorkload struct {
	Namespace, Name string
	// Renew makes the renewal calls: each must shake hands anew with the
	// Store's current certificate (PerCallClient).
	Renew apiv1.IdentityClient
}

func (ew *ExternalWorkload) check(id identity.ID) error {
	if ew == nil {
		return nil
	}
	if err := ewtoken.CheckRef(ew.Namespace, ew.Name); err != nil {
		return fmt.Errorf("external workload: %w", err)
	}
	if ew.Renew == nil {
		return errors.New("external workload: a renewal client is required")
	}
	if id.Namespace != ew.Namespace {
		return fmt.Errorf("external workload %s cannot have identity %s: another namespace", ew.ref(), id)
	}
	return nil
}

func (ew *ExternalWorkload) ref() string { return ewtoken.Ref(ew.Namespace, ew.Name) }

// mintHint is the command that mints a new bootstrap token.
func (ew *ExternalWorkload) mintHint() string {
	return "trellis external-workload token " + ew.Name + " -n " + ew.Namespace
}

// ewState is what the certifier remembers of an external workload's
// credentials between calls (loop only).
type ewState struct {
	// sent is the SHA-256 of the last bootstrap token sent: a different
	// one in the file is a new token, worth sending even while renewals
	// work (e.g. after the workload was recreated).
	sent [sha256.Size]byte
	// expiredLogged: the expired certificate was reported once.
	expiredLogged bool
}

// credential returns the client and token of the next Certify: the token
// file's over the shared connection, or, for an external workload with a
// valid certificate, a renewal over a connection presenting it.
func (c *certifier) credential() (apiv1.IdentityClient, []byte, error) {
	ew := c.cfg.ExternalWorkload
	if ew == nil {
		token, err := readToken(c.cfg.TokenFile)
		return c.cfg.Client, token, err
	}
	token, fileErr := readToken(c.cfg.TokenFile)
	if c.cfg.Store.Ready() {
		if fileErr == nil && sha256.Sum256(token) != c.ew.sent {
			c.log.Info("external workload: a new bootstrap token is in the token file; sending it instead of renewing", "externalworkload", ew.ref())
			c.ew.sent = sha256.Sum256(token)
			return c.cfg.Client, token, nil
		}
		c.ew.expiredLogged = false
		return ew.Renew, ewtoken.RenewToken(ew.Namespace, ew.Name), nil
	}
	if !c.cfg.Store.Expiry().IsZero() && !c.ew.expiredLogged {
		c.log.Error("external workload: the certificate expired, so it cannot renew itself; the proxy needs a new bootstrap token in the token file",
			"externalworkload", ew.ref(), "expired_at", c.cfg.Store.Expiry(), "token_file", c.cfg.TokenFile, "mint", ew.mintHint())
		c.ew.expiredLogged = true
	}
	if fileErr != nil {
		return nil, nil, fmt.Errorf("external workload %s needs a bootstrap token (%s): %w", ew.ref(), ew.mintHint(), fileErr)
	}
	c.ew.sent = sha256.Sum256(token)
	return c.cfg.Client, token, nil
}

// PerCallClient is an apiv1.IdentityClient that dials a new connection
// for every call and closes it after: each call's TLS handshake presents
// the certificate current at that moment, where a long-lived connection
// keeps the one of its own handshake. Options are those of the shared
// connection (the same verification of the controller).
type PerCallClient struct {
	Target  string
	Options []grpc.DialOption
}

var _ apiv1.IdentityClient = PerCallClient{}

// Certify implements apiv1.IdentityClient.
func (p PerCallClient) Certify(ctx context.Context, in *apiv1.CertifyRequest, opts ...grpc.CallOption) (*apiv1.CertifyResponse, error) {
	cc, err := grpc.NewClient(p.Target, p.Options...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", p.Target, err)
	}
	defer cc.Close()
	return apiv1.NewIdentityClient(cc).Certify(ctx, in, opts...)
}
