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

// TestBoundCounts: an answer with more route matches or authorizations
// than the proxy compiles is trimmed (routes first, from the last), so
// the proxy does not refuse it and keep its default for the port. Small
// objects reach the counts long before MaxAnswerBytes.
func TestBoundCounts(t *testing.T) {
	route := func(name string, n int) *apiv1.InboundRoute {
		r := &apiv1.InboundRoute{Name: name, Authorizations: []*apiv1.Authorization{{Name: "open", Unauthenticated: true}}}
		for i := range n {
			r.Matches = append(r.Matches, &apiv1.RouteMatch{PathExact: "/p" + strings.Repeat("x", i%7)})
		}
		return r
	}
	manyAuthz := func(n int) []*apiv1.Authorization {
		out := make([]*apiv1.Authorization, n)
		for i := range out {
			out[i] = &apiv1.Authorization{Name: "a", Identities: []string{"*"}}
		}
		return out
	}
	for _, tc := range []struct {
		name           string
		sp             *apiv1.ServerPolicy
		routes, authzs int // left
	}{
		{"matches", &apiv1.ServerPolicy{Routes: []*apiv1.InboundRoute{route("a", 6000), route("b", 3000), route("c", 2000)}}, 2, 0},
		{"route authorizations", &apiv1.ServerPolicy{Authorizations: manyAuthz(9000), Routes: []*apiv1.InboundRoute{
			{Name: "a", Authorizations: manyAuthz(900)}, {Name: "b", Authorizations: manyAuthz(900)}}}, 1, 9000},
		{"server authorizations", &apiv1.ServerPolicy{Authorizations: manyAuthz(authz.MaxAuthorizations + 5)}, 0, authz.MaxAuthorizations},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.sp.Name, tc.sp.Access, tc.sp.Source = "server/web", apiv1.AccessPolicy_DENY, "server"
			if _, err := authz.Compile(tc.sp, authz.Defaults{}); err == nil {
				t.Fatal("the untrimmed answer compiles: the case tests nothing")
			}
			bound(tc.sp)
			if len(tc.sp.Routes) != tc.routes || len(tc.sp.Authorizations) != tc.authzs {
				t.Errorf("%d routes, %d authorizations left; want %d, %d", len(tc.sp.Routes), len(tc.sp.Authorizations), tc.routes, tc.authzs)
			}
			if _, err := authz.Compile(tc.sp, authz.Defaults{}); err != nil {
				t.Fatalf("the proxy refuses the trimmed answer: %v", err)
			}
		})
	}
}
