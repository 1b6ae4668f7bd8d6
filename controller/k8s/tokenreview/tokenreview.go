// Package tokenreview authenticates Identity.Certify callers in Kubernetes
// mode: the proxy sends its pod's projected ServiceAccount token (audience
// identity.trellis.io), the API server vouches for it through a
// TokenReview, and the token's ServiceAccount must be the one of the
// identity the proxy asks for.
package tokenreview

import (
	"context"
	"errors"
	"fmt"
	"slices"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"

	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Audience is the audience of the tokens Trellis accepts. The injector
// projects a token for it, so a token made for anything else (the API
// server's default audience, another system) is refused.
const Audience = "identity.trellis.io"

// MaxTokenSize bounds what is sent to the API server; real tokens are a
// few kilobytes.
const MaxTokenSize = 16 << 10

// PodNameExtra is the TokenReview user extra naming the pod a bound token
// belongs to.
const PodNameExtra = "authentication.kubernetes.io/pod-name"

// Error is a refusal, with the reason label of
// trellis_controller_certificates_refused_total.
type Error struct {
	// Reason is one of metrics.Reason*.
	Reason string
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// ErrUnavailable wraps failures to reach the API server: the caller should
// retry, the token may be fine.
var ErrUnavailable = errors.New("token review unavailable")

// Authenticator checks tokens with the TokenReview API.
type Authenticator struct {
	// Client creates TokenReviews (clientset.AuthenticationV1()).
	Client authnclient.TokenReviewsGetter
	// Audience the token must be for; default Audience.
	Audience string
	// TrustDomain, when set, is the only trust domain identities may be in.
	TrustDomain string
}

// Result is who a token proved to be.
type Result struct {
	// Username is "system:serviceaccount:NS:SA".
	Username string
	// UID is the ServiceAccount's UID.
	UID string
	// Pod is the pod the token is bound to, "" for an unbound token.
	Pod string
}

// Authenticate reviews token and checks that it proves the right to id.
// Errors are *Error; a failure to reach the API server also matches
// ErrUnavailable. The token never appears in errors or logs.
func (a *Authenticator) Authenticate(ctx context.Context, token []byte, id identity.ID) (Result, error) {
	aud := a.Audience
	if aud == "" {
		aud = Audience
	}
	if a.TrustDomain != "" && id.TrustDomain != a.TrustDomain {
		return Result{}, &Error{metrics.ReasonIdentityMismatch, fmt.Errorf("identity %s is not in trust domain %s", id, a.TrustDomain)}
	}
	if len(token) == 0 {
		return Result{}, &Error{metrics.ReasonBadToken, errors.New("no token: the request must carry the pod's projected ServiceAccount token")}
	}
	if len(token) > MaxTokenSize {
		return Result{}, &Error{metrics.ReasonBadToken, fmt.Errorf("token is %d bytes, more than %d", len(token), MaxTokenSize)}
	}
	tr, err := a.Client.TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: string(token), Audiences: []string{aud}},
	}, metav1.CreateOptions{})
	if err != nil {
		return Result{}, &Error{metrics.ReasonInternal, fmt.Errorf("%w: %w", ErrUnavailable, err)}
	}
	st := tr.Status
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return Result{}, &Error{metrics.ReasonBadToken, fmt.Errorf("token refused by the API server (audience %s): %s", aud, msg)}
	}
	// An audience-unaware authenticator may accept a token made for
	// another audience; only an explicit match counts.
	if !slices.Contains(st.Audiences, aud) {
		return Result{}, &Error{metrics.ReasonBadToken, fmt.Errorf("token is not for audience %s (reviewed audiences %v)", aud, st.Audiences)}
	}
	r := Result{Username: st.User.Username, UID: st.User.UID}
	if pods := st.User.Extra[PodNameExtra]; len(pods) == 1 {
		r.Pod = pods[0]
	}
	if want := id.KubernetesUsername(); r.Username != want {
		return r, &Error{metrics.ReasonIdentityMismatch, fmt.Errorf("token is for %q, but the request asks for %s (%s)", r.Username, id, want)}
	}
	return r, nil
}
