package routematch

import (
	"net/http"
	"net/url"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// TestSelectStrict: a path reads as /public (route 0, the only open one;
// 1 is /admin, 2 the catch-all) only if every app's reading of it does:
// "/admin/..;/public" is "/public" once params are dropped, but a path
// under /admin to Go's mux; "/admin/x%2F..%2F..%2Fpublic" is "/public"
// decoded, but under /admin to an app that routes on the escaped path;
// "/admin/../public" is under /admin to chi.
func TestSelectStrict(t *testing.T) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{
		{{PathPrefix: "/public"}},
		{{PathPrefix: "/admin"}},
		nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		target string // the request target as sent
		public bool   // every reading is /public
	}{
		{"/public/a", true},
		{"/admin/a", false},
		{"/public/a%20b", true},
		{"/public;jsessionid=1/a", true},
		{"/public/./a", true},
		{"/public//a", true},
		{"//public/a", true},
		// Dot segments: resolved by some apps, routed as sent by others.
		{"/admin/../public", false},
		{"/secret%23/../../public", false},
		{"/secret%3F/../../public", false},
		// Params before dot segments: Tomcat and Go disagree.
		{"/admin/..;/public", false},
		{"/admin;/../public", false},
		// Encoded separators and dots.
		{"/admin/x%2F..%2F..%2Fpublic", false},
		{"/admin/x/%2e%2e/%2E%2E/public", false},
		{"/admin%2F..%2Fpublic", false},
		{"/public%2Fa", false}, // one segment to some apps
		// Backslashes as separators.
		{"/admin\\..\\public", false},
		{"/admin%5C..%5Cpublic", false},
		{"/public\\a", false},
	} {
		u, err := url.ParseRequestURI(tt.target)
		if err != nil {
			t.Fatalf("%q: %v", tt.target, err)
		}
		rs := tbl.SelectStrict("GET", u.Path, u.EscapedPath(), nil)
		if rs.Routes[0] != tbl.Select("GET", u.Path, nil) {
			t.Errorf("SelectStrict(%q): first route %d, not Select's", tt.target, rs.Routes[0])
		}
		public := true
		for _, i := range rs.Routes[:rs.N] {
			public = public && i == 0
		}
		if public != tt.public {
			t.Errorf("SelectStrict(%q) = %v, want only /public: %v", tt.target, rs.Routes[:rs.N], tt.public)
		}
	}
}

func FuzzSelectStrict(f *testing.F) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{{{PathPrefix: "/public"}}, {{PathExact: "/admin"}}, nil})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"/admin/..;/public", "/a%2Fb", "/a\\b", "%", "/%2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, escaped string) {
		u, err := url.ParseRequestURI(escaped)
		if err != nil {
			return
		}
		rs := tbl.SelectStrict("GET", u.Path, u.EscapedPath(), nil)
		if rs.N < 1 || rs.N > MaxReadings || rs.Routes[0] != tbl.Select("GET", u.Path, nil) {
			t.Fatalf("SelectStrict(%q) = %v, first not Select's", escaped, rs)
		}
	})
}

// TestRepeatedHeader: a repeated field matches only if every value does:
// the app may read the last one ("X-Tenant: public" then "X-Tenant:
// admin" must not get the public route).
func TestRepeatedHeader(t *testing.T) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{
		{{PathPrefix: "/api", Headers: []*apiv1.RouteMatch_Header{{Name: "x-tenant", Value: "public"}}}},
		{{PathPrefix: "/api", Headers: []*apiv1.RouteMatch_Header{{Name: "x-canary", Value: "c[0-9]+", Regex: true}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		h    http.Header
		want int
	}{
		{http.Header{"X-Tenant": {"public"}}, 0},
		{http.Header{"X-Tenant": {"public", "public"}}, 0},
		{http.Header{"X-Tenant": {"public", "admin"}}, -1},
		{http.Header{"X-Tenant": {"admin", "public"}}, -1},
		{http.Header{"X-Canary": {"c1", "c2"}}, 1},
		{http.Header{"X-Canary": {"c1", "prod"}}, -1},
	} {
		if got := tbl.Select("GET", "/api/x", tt.h); got != tt.want {
			t.Errorf("Select(%v) = %d, want %d", tt.h, got, tt.want)
		}
	}
}
