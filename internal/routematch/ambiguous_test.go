package routematch

import (
	"net/http"
	"net/url"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// TestSelectStrict: a path that some app reads as another route than the
// proxy does matches no route (route 0 is "/public", 1 "/admin", 2 the
// catch-all): "/admin/..;/public" is "/public" once params are dropped,
// but "/admin/..;/public" (under /admin) to Go's mux; "/admin/x%2F..%2F..
// %2Fpublic" is "/public" decoded, but under /admin to an app that routes
// on the escaped path.
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
		want   int
	}{
		{"/public/a", 0},
		{"/admin/a", 1},
		{"/public/../admin", 1},
		{"/admin/../public", 0},
		{"/public/a%20b", 0},
		{"/caf%C3%A9", 2},
		{"/public;jsessionid=1/a", 0},
		{"/admin;x", 1},
		// Params before dot segments: Tomcat and Go disagree.
		{"/admin/..;/public", -1},
		{"/admin;/../public", 0}, // "/public" to both readings
		{"/public/..;/admin", -1},
		// Encoded separators and dots.
		{"/admin/x%2F..%2F..%2Fpublic", -1},
		{"/admin/x/%2e%2e/%2E%2E/public", -1},
		{"/admin%2F..%2Fpublic", -1},
		// An encoded slash is one segment to some apps: no route.
		{"/public%2Fa", -1},
		{"/%61dmin/a", 1},
		// Backslashes as separators.
		{"/admin\\..\\public", -1},
		{"/admin%5C..%5Cpublic", -1},
		{"/public\\a", -1},
	} {
		u, err := url.ParseRequestURI(tt.target)
		if err != nil {
			t.Fatalf("%q: %v", tt.target, err)
		}
		if got := tbl.SelectStrict("GET", u.Path, u.EscapedPath(), nil); got != tt.want {
			t.Errorf("SelectStrict(%q) = %d, want %d (Select of the decoded path: %d)", tt.target, got, tt.want, tbl.Select("GET", u.Path, nil))
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
		got := tbl.SelectStrict("GET", u.Path, u.EscapedPath(), nil)
		if got != -1 && got != tbl.Select("GET", u.Path, nil) {
			t.Fatalf("SelectStrict(%q) = %d, neither -1 nor Select's", escaped, got)
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
