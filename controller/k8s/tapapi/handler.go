// Package tapapi serves the tap.trellis.io/v1alpha1 aggregated API
// (issue 14): the kube-apiserver authenticates and authorizes a user's
// tap (verb watch on RESOURCE/tap) and proxies it here with the user in
// front-proxy headers; the controller believes those headers only from
// the front proxy's certificate, re-checks with SubjectAccessReviews
// (watch, and capture when bodies are asked for), resolves the target to
// its meshed pods, taps each proxy over mesh mTLS with its own identity
// and streams the events back as newline-delimited protojson.
package tapapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/tapfan"
)

// Defaults of Server.
const (
	DefaultMaxPerUser = 5
	DefaultMaxTotal   = 50
)

// Server is the aggregated API's HTTP handler.
type Server struct {
	Client kubernetes.Interface
	Auth   interface {
		Get(context.Context) (*RequestHeader, error)
	}
	Dialer      *tapfan.Dialer
	TrustDomain string
	Log         *slog.Logger
	// MaxPerUser and MaxTotal cap concurrent taps (0: the defaults).
	MaxPerUser, MaxTotal int

	requests *prometheus.CounterVec
	mu       sync.Mutex
	open     map[string]int
	total    int
}

// Register adds the server's metrics to reg.
func (s *Server) Register(reg prometheus.Registerer) error {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controller_tap_requests_total",
		Help: "Requests to the tap.trellis.io API by result (ok, unauthenticated, forbidden, bad_request, not_found, too_many, error).",
	}, []string{"result"})
	return reg.Register(s.requests)
}

func (s *Server) count(result string) {
	if s.requests != nil {
		s.requests.WithLabelValues(result).Inc()
	}
}

func (s *Server) fail(w http.ResponseWriter, code int, reason metav1.StatusReason, result, msg string) {
	s.count(result)
	writeStatus(w, code, reason, msg)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if serveDiscovery(w, r) {
		return
	}
	t, ok := parseTapPath(r.URL.Path)
	if !ok {
		s.fail(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not_found", "no such path: "+r.URL.Path+" (taps are POST /apis/"+Group+"/"+Version+"/watch/namespaces/NS[/RESOURCE/NAME]/tap)")
		return
	}
	if r.Method != http.MethodPost {
		s.fail(w, http.StatusMethodNotAllowed, metav1.StatusReasonMethodNotAllowed, "bad_request", "a tap is a POST with an ObserveRequest body")
		return
	}
	user, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	req, err := tapfan.ReadObserveRequest(r.Body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, metav1.StatusReasonBadRequest, "bad_request", "the ObserveRequest body: "+err.Error())
		return
	}
	if !s.authorize(w, r.Context(), user, t, req) {
		return
	}
	release, ok := s.admit(user.Name)
	if !ok {
		s.fail(w, http.StatusTooManyRequests, metav1.StatusReasonTooManyRequests, "too_many",
			fmt.Sprintf("too many open taps (at most %d per user, %d in all): close one first", s.maxPerUser(), s.maxTotal()))
		return
	}
	defer release()
	s.stream(w, r, user, t, req)
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (User, bool) {
	rh, err := s.Auth.Get(r.Context())
	if err != nil {
		s.Log.Error("cannot authenticate taps", "err", err)
		s.fail(w, http.StatusServiceUnavailable, metav1.StatusReasonServiceUnavailable, "error", "the tap API cannot authenticate requests: "+err.Error())
		return User{}, false
	}
	u, err := rh.Authenticate(r, time.Now())
	if err != nil {
		s.Log.Info("refused an unauthenticated tap", "remote", r.RemoteAddr, "err", err)
		s.fail(w, http.StatusUnauthorized, metav1.StatusReasonUnauthorized, "unauthenticated", "unauthenticated: taps are served through the Kubernetes API server only")
		return User{}, false
	}
	return u, true
}

// authorize re-checks what the kube-apiserver already checked (watch)
// and, for bodies, the capture verb, with SubjectAccessReviews.
func (s *Server) authorize(w http.ResponseWriter, ctx context.Context, u User, t Target, req *apiv1.ObserveRequest) bool {
	verbs := []string{VerbWatch}
	if req.GetBodyBytes() > 0 {
		verbs = append(verbs, VerbCapture)
	}
	for _, verb := range verbs {
		allowed, reason, err := s.review(ctx, u, t, verb)
		if err != nil {
			s.Log.Error("SubjectAccessReview failed", "user", u.Name, "err", err)
			s.fail(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "error", "cannot check authorization: "+err.Error())
			return false
		}
		if !allowed {
			msg := fmt.Sprintf("user %q cannot %s resource %q in API group %q in the namespace %q", u.Name, verb, attrsResource(t), Group, t.Namespace)
			if verb == VerbCapture {
				msg += ": capturing bodies needs the RBAC verb capture (ClusterRole trellis-tap-capture)"
			}
			if reason != "" {
				msg += " (" + reason + ")"
			}
			s.fail(w, http.StatusForbidden, metav1.StatusReasonForbidden, "forbidden", msg)
			return false
		}
	}
	return true
}

// attrsResource is the resource as RBAC sees the tap's path.
func attrsResource(t Target) string {
	if t.Resource == "namespaces" {
		return Subresource
	}
	return t.Resource + "/" + Subresource
}

func (s *Server) review(ctx context.Context, u User, t Target, verb string) (bool, string, error) {
	ra := &authzv1.ResourceAttributes{Namespace: t.Namespace, Verb: verb, Group: Group, Version: Version, Resource: Subresource}
	if t.Resource != "namespaces" {
		ra.Resource, ra.Subresource, ra.Name = t.Resource, Subresource, t.Name
	}
	sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: u.Name, Groups: u.Groups, ResourceAttributes: ra}}
	if len(u.Extra) > 0 {
		sar.Spec.Extra = map[string]authzv1.ExtraValue{}
		for k, v := range u.Extra {
			sar.Spec.Extra[k] = v
		}
	}
	got, err := s.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, "", err
	}
	return got.Status.Allowed && !got.Status.Denied, got.Status.Reason, nil
}

func (s *Server) maxPerUser() int { return defaulted(s.MaxPerUser, DefaultMaxPerUser) }
func (s *Server) maxTotal() int   { return defaulted(s.MaxTotal, DefaultMaxTotal) }

func defaulted(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

// admit counts an open tap against the caps.
func (s *Server) admit(user string) (release func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[string]int{}
	}
	if s.open[user] >= s.maxPerUser() || s.total >= s.maxTotal() {
		return nil, false
	}
	s.open[user]++
	s.total++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.open[user]--
		if s.open[user] == 0 {
			delete(s.open, user)
		}
		s.total--
	}, true
}

// parseTapPath reads /apis/tap.trellis.io/v1alpha1/watch/namespaces/NS/tap
// and .../watch/namespaces/NS/RESOURCE/NAME/tap.
func parseTapPath(p string) (Target, bool) {
	rest, ok := strings.CutPrefix(p, "/apis/"+Group+"/"+Version+"/watch/namespaces/")
	if !ok {
		return Target{}, false
	}
	parts := strings.Split(rest, "/")
	valid := func(s string) bool { return s != "" && len(s) <= 253 && !strings.ContainsAny(s, " \t%") }
	switch {
	case len(parts) == 2 && parts[1] == Subresource && valid(parts[0]):
		return Target{Namespace: parts[0], Resource: "namespaces", Name: parts[0]}, true
	case len(parts) == 4 && parts[3] == Subresource && valid(parts[0]) && valid(parts[2]):
		for _, r := range tapResources {
			if parts[1] == r {
				return Target{Namespace: parts[0], Resource: r, Name: parts[2]}, true
			}
		}
	}
	return Target{}, false
}

// stream taps the target's pods and writes each event as one line.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, u User, t Target, req *apiv1.ObserveRequest) {
	ctx := r.Context()
	pods, err := Resolve(ctx, s.Client, t, s.TrustDomain)
	if err != nil {
		if nf, ok := err.(errNotFound); ok {
			s.fail(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not_found", nf.Error())
			return
		}
		s.fail(w, http.StatusInternalServerError, metav1.StatusReasonInternalError, "error", fmt.Sprintf("%s: %v", t, err))
		return
	}
	if len(pods) == 0 {
		s.fail(w, http.StatusNotFound, metav1.StatusReasonNotFound, "not_found", fmt.Sprintf("%s has no running meshed pods", t))
		return
	}
	s.count("ok")
	s.Log.Info("tap", "user", u.Name, "target", t.String(), "pods", len(pods), "bodyBytes", req.GetBodyBytes())
	failed, err := s.Dialer.Stream(ctx, w, s.Log, pods, req)
	s.Log.Info("tap ended", "user", u.Name, "target", t.String(), "failedPods", failed, "err", err)
}
