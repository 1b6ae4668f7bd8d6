// Package ewtoken authenticates the Identity.Certify calls of external
// workloads (VMs, bare-metal hosts: workload.trellis.io ExternalWorkloads),
// which have no Kubernetes credentials. The first call carries a
// single-use bootstrap token (internal/ewtoken) that is redeemed by
// deleting its Secret; later calls renew by presenting the current
// certificate in the TLS handshake, whose key must be the one recorded in
// the workload's status.keySHA256 at bootstrap. Any other token goes to
// the Next authenticator (TokenReview for pods).
package ewtoken

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	wltyped "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/typed/workload/v1alpha1"
	wlv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/ewtoken"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Config is what an Authenticator needs.
type Config struct {
	// Next authenticates every token that is not an external workload's
	// (the TokenReview one); nil: such tokens are refused.
	Next identitysvc.Authenticator
	// Secrets reads and deletes the token Secrets (clientset.CoreV1()).
	Secrets corev1client.SecretsGetter
	// Workloads reads ExternalWorkloads and writes their status.
	Workloads wltyped.ExternalWorkloadsGetter
	// Namespace holds the token Secrets: the control plane's.
	Namespace string
	// TrustDomain is the controller's: the only one identities may be in.
	TrustDomain string
	// Anchors returns the CA's current trust anchors; a renewal's
	// certificate must verify against them at the time of the call.
	Anchors func() *x509.CertPool
	// Registerer, when set, gets the metrics below.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Authenticator is an identitysvc.Authenticator for external workloads.
type Authenticator struct {
	cfg Config
	log *slog.Logger
	m   *authMetrics
}

var _ identitysvc.Authenticator = (*Authenticator)(nil)

// New checks cfg and registers the metrics.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Secrets == nil || cfg.Workloads == nil || cfg.Anchors == nil {
		return nil, errors.New("ewtoken: Secrets, Workloads and Anchors are required")
	}
	if cfg.Namespace == "" || cfg.TrustDomain == "" {
		return nil, errors.New("ewtoken: Namespace and TrustDomain are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("ewtoken: %w", err)
	}
	return &Authenticator{cfg: cfg, log: log, m: m}, nil
}

// Authenticate implements identitysvc.Authenticator.
func (a *Authenticator) Authenticate(ctx context.Context, req identitysvc.Request) (identitysvc.Caller, error) {
	switch {
	case ewtoken.IsBootstrap(req.Token):
		return a.bootstrap(ctx, req)
	case ewtoken.IsRenew(req.Token):
		return a.renew(ctx, req)
	case a.cfg.Next != nil:
		return a.cfg.Next.Authenticate(ctx, req)
	}
	return identitysvc.Caller{}, refusal(metrics.ReasonBadToken, errors.New("not an external workload token"))
}

// refusal is an AuthError; none of its messages holds a token.
func refusal(reason string, err error) error { return &identitysvc.AuthError{Reason: reason, Err: err} }

// unavailable marks an API failure: the caller retries, the token is kept.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %w", identitysvc.ErrAuthUnavailable, what, err)
}

// checkDomain refuses identities outside the controller's trust domain.
func (a *Authenticator) checkDomain(id identity.ID) error {
	if id.TrustDomain != a.cfg.TrustDomain {
		return refusal(metrics.ReasonIdentityMismatch, fmt.Errorf("identity %s is not in trust domain %s", id, a.cfg.TrustDomain))
	}
	return nil
}

// workload reads namespace/name and checks that its identity is id.
func (a *Authenticator) workload(ctx context.Context, namespace, name string, id identity.ID) (*wlv1.ExternalWorkload, error) {
	ref := ewtoken.Ref(namespace, name)
	ew, err := a.cfg.Workloads.ExternalWorkloads(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil, refusal(metrics.ReasonUnknownIdentity, fmt.Errorf("externalworkload %s not found", ref))
	case err != nil:
		return nil, unavailable("get externalworkload "+ref, err)
	case ew.DeletionTimestamp != nil:
		// Deleting it revokes it, whatever finalizers keep it a while.
		return nil, refusal(metrics.ReasonUnknownIdentity, fmt.Errorf("externalworkload %s is being deleted", ref))
	case namespace == a.cfg.Namespace:
		// The control plane's identities (the controller's, which proxies
		// trust for tap) are never a host's.
		return nil, refusal(metrics.ReasonIdentityMismatch, fmt.Errorf("externalworkload %s is in the control plane's namespace", ref))
	}
	want := identity.ID{TrustDomain: a.cfg.TrustDomain, Namespace: namespace, ServiceAccount: ew.Spec.ServiceAccount}
	if want != id {
		return nil, refusal(metrics.ReasonIdentityMismatch, fmt.Errorf("externalworkload %s has identity %s, the request asks for %s", ref, want, id))
	}
	return ew, nil
}

// callerName names an external workload's call in logs and events.
func callerName(namespace, name, how string) string {
	return "externalworkload " + ewtoken.Ref(namespace, name) + " (" + how + ")"
}

// authMetrics are the package's metrics; nil fields are not counted.
type authMetrics struct {
	statusErrors  prometheus.Counter
	tokensDeleted *prometheus.CounterVec
}

// Reasons a token Secret is deleted, the values of the reason label.
const (
	deletedRedeemed = "redeemed"
	deletedExpired  = "expired"
)

func newMetrics(reg prometheus.Registerer) (*authMetrics, error) {
	m := &authMetrics{
		statusErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_controller_external_workload_status_errors_total",
			Help: "Failed writes of an ExternalWorkload's status after a certificate was issued (a bootstrap is then refused; a renewal still gets its certificate).",
		}),
		tokensDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_external_workload_tokens_deleted_total",
			Help: "Bootstrap token Secrets deleted, by reason (redeemed, expired).",
		}, []string{"reason"}),
	}
	for _, r := range []string{deletedRedeemed, deletedExpired} {
		m.tokensDeleted.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.statusErrors, m.tokensDeleted} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}
