package tokenreview

import (
	"context"
	"errors"
	"strings"
	"testing"

	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// apiServer is a fake TokenReview endpoint: it knows tokens, the
// ServiceAccount each belongs to and the audiences each was made for, and
// answers like the real one (the intersection of audiences).
type apiServer struct {
	tokens map[string]struct {
		user      string
		audiences []string
	}
	fail error
}

func (s *apiServer) react(action k8stesting.Action) (bool, runtime.Object, error) {
	if s.fail != nil {
		return true, nil, s.fail
	}
	tr := action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).DeepCopy()
	tok, ok := s.tokens[tr.Spec.Token]
	if !ok {
		tr.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		return true, tr, nil
	}
	var both []string
	for _, a := range tr.Spec.Audiences {
		for _, b := range tok.audiences {
			if a == b {
				both = append(both, a)
			}
		}
	}
	if len(tr.Spec.Audiences) > 0 && len(both) == 0 {
		tr.Status = authnv1.TokenReviewStatus{Error: "token audiences is invalid for the target audiences"}
		return true, tr, nil
	}
	tr.Status = authnv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     both,
		User: authnv1.UserInfo{Username: tok.user, Extra: map[string]authnv1.ExtraValue{
			PodNameExtra: {"books-1"},
		}},
	}
	return true, tr, nil
}

func TestAuthenticate(t *testing.T) {
	srv := &apiServer{tokens: map[string]struct {
		user      string
		audiences []string
	}{
		"good":     {"system:serviceaccount:demo:books", []string{Audience}},
		"two-auds": {"system:serviceaccount:demo:books", []string{"https://kubernetes.default.svc", Audience}},
		"api-only": {"system:serviceaccount:demo:books", []string{"https://kubernetes.default.svc"}},
		"user":     {"alice", []string{Audience}},
		"other-sa": {"system:serviceaccount:demo:web", []string{Audience}},
		"other-ns": {"system:serviceaccount:prod:books", []string{Audience}},
	}}
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", srv.react)
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}

	tests := []struct {
		name, token string
		id          identity.ID
		reason      string // "" for success
		msg         string
	}{
		{name: "authenticated", token: "good", id: books},
		{name: "token for several audiences", token: "two-auds", id: books},
		{name: "unknown token", token: "forged", id: books, reason: metrics.ReasonBadToken, msg: "invalid bearer token"},
		{name: "wrong audience", token: "api-only", id: books, reason: metrics.ReasonBadToken, msg: "audience"},
		{name: "empty token", token: "", id: books, reason: metrics.ReasonBadToken, msg: "no token"},
		{name: "huge token", token: strings.Repeat("x", MaxTokenSize+1), id: books, reason: metrics.ReasonBadToken, msg: "more than"},
		{name: "not a service account", token: "user", id: books, reason: metrics.ReasonIdentityMismatch, msg: `"alice"`},
		{name: "other service account", token: "other-sa", id: books, reason: metrics.ReasonIdentityMismatch, msg: "system:serviceaccount:demo:web"},
		{name: "other namespace", token: "other-ns", id: books, reason: metrics.ReasonIdentityMismatch, msg: "system:serviceaccount:prod:books"},
		{name: "other trust domain", token: "good", id: identity.ID{TrustDomain: "evil.org", Namespace: "demo", ServiceAccount: "books"}, reason: metrics.ReasonIdentityMismatch, msg: "trust domain"},
	}
	a := &Authenticator{Client: client.AuthenticationV1(), TrustDomain: "cluster.local"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := a.Authenticate(context.Background(), []byte(tt.token), tt.id)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if r.Username != books.KubernetesUsername() || r.Pod != "books-1" {
					t.Fatalf("result %+v", r)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Reason != tt.reason || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("err %v, want reason %s containing %q", err, tt.reason, tt.msg)
			}
			if tt.token != "" && len(tt.token) < 64 && strings.Contains(err.Error(), tt.token+" ") {
				t.Fatalf("error %q shows the token", err)
			}
		})
	}

	// The request carries Trellis's audience, whatever the token.
	var seen []string
	client.PrependReactor("create", "tokenreviews", func(action k8stesting.Action) (bool, runtime.Object, error) {
		seen = action.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview).Spec.Audiences
		return false, nil, nil
	})
	_, _ = a.Authenticate(context.Background(), []byte("good"), books)
	if len(seen) != 1 || seen[0] != Audience {
		t.Fatalf("review audiences %v, want [%s]", seen, Audience)
	}

	// The API server unreachable: retryable, not the token's fault.
	srv.fail = errors.New("connection refused")
	_, err := a.Authenticate(context.Background(), []byte("good"), books)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("API down: %v, want ErrUnavailable", err)
	}
}
