package policymodel

import (
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
)

// TestRouteMatchesCompile: a match the proxy's evaluator refuses (a header
// regex RE2 does not support, or too long) is left out like any match the
// proxy cannot evaluate. Sent as is, the proxy refuses the whole answer,
// and the port keeps the proxy's default (all-unauthenticated unless
// configured): one bad regex in one HTTPRoute would drop the Server's
// deny and every authorization of it.
func TestRouteMatchesCompile(t *testing.T) {
	regex := gwv1.HeaderMatchRegularExpression
	exact := gwv1.PathMatchExact
	hdr := func(v string) gwv1.HTTPHeaderMatch {
		return gwv1.HTTPHeaderMatch{Type: &regex, Name: "x-user", Value: v}
	}
	for _, tc := range []struct {
		name  string
		value string
		kept  int // matches kept of the two
	}{
		{"RE2 regex", "a.*", 2},
		{"lookahead", "(?!admin).*", 1},
		{"backreference", `(a)\1`, 1},
		{"too long", strings.Repeat("a", 2000), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := "/login"
			hr := &gwv1.HTTPRoute{Spec: gwv1.HTTPRouteSpec{Rules: []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{
				{Path: &gwv1.HTTPPathMatch{Type: &exact, Value: &p}},
				{Headers: []gwv1.HTTPHeaderMatch{hdr(tc.value)}},
			}}}}}
			ms, ok := httpMatches(hr)
			if !ok || len(ms) != tc.kept {
				t.Fatalf("httpMatches: %d matches (ok %v), want %d", len(ms), ok, tc.kept)
			}
			sp := &apiv1.ServerPolicy{Name: "server/web", Access: apiv1.AccessPolicy_DENY, Source: "server",
				Routes: []*apiv1.InboundRoute{{Name: "shop/login", Matches: ms}}}
			if _, err := authz.Compile(sp, authz.Defaults{}); err != nil {
				t.Fatalf("the proxy refuses the answer: %v", err)
			}
		})
	}
}
