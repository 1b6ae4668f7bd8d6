package serve

import (
	"context"
	"errors"
	"fmt"

	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/k8s/tokenreview"
	"github.com/trellis-mesh/trellis/controller/metrics"
)

// TokenReviewAuth adapts the TokenReview authenticator to the identity
// service (which knows nothing of Kubernetes), mapping its refusals: an
// unreachable API server to identitysvc.ErrAuthUnavailable, the others to
// an identitysvc.AuthError with the same reason.
type TokenReviewAuth struct{ *tokenreview.Authenticator }

var _ identitysvc.Authenticator = TokenReviewAuth{}

// Authenticate implements identitysvc.Authenticator.
func (t TokenReviewAuth) Authenticate(ctx context.Context, req identitysvc.Request) (identitysvc.Caller, error) {
	r, err := t.Authenticator.Authenticate(ctx, req.Token, req.ID)
	if err != nil {
		if errors.Is(err, tokenreview.ErrUnavailable) {
			return identitysvc.Caller{}, fmt.Errorf("%w: %w", identitysvc.ErrAuthUnavailable, err)
		}
		reason := metrics.ReasonBadToken
		var te *tokenreview.Error
		if errors.As(err, &te) {
			reason = te.Reason
		}
		return identitysvc.Caller{}, &identitysvc.AuthError{Reason: reason, Err: err}
	}
	c := identitysvc.Caller{Name: r.Username, UID: r.UID}
	if r.Pod != "" {
		c.Name += " (pod " + r.Pod + ")"
	}
	return c, nil
}
