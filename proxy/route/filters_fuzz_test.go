package route

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// FuzzFilters: whatever the request path and the route's prefixes and
// replacements (once they compile), a rewrite leaves an absolute path and
// a redirect a Location that parses, without a control character.
func FuzzFilters(f *testing.F) {
	f.Add("/api/v1/x", "/api", "/", "new.example", uint32(0))
	f.Add("/a/../b;x", "/", "/v2/", "", uint32(8080))
	f.Add("/%2e%2e/x", "/x", "/y", "h:1", uint32(1))
	f.Fuzz(func(t *testing.T, path, prefix, repl, host string, port uint32) {
		routes := []*apiv1.Route{
			{Matches: []*apiv1.RouteMatch{{PathPrefix: prefix}}, Rewrite: &apiv1.URLRewrite{PrefixMatch: repl, Hostname: host}},
			{Matches: []*apiv1.RouteMatch{{PathPrefix: prefix}}, Redirect: &apiv1.Redirect{PrefixMatch: repl, Hostname: host, Port: port}},
		}
		rs, err := Compile(routes)
		if err != nil {
			return
		}
		u, err := url.Parse("http://web.ns" + path)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Host: "web.ns:80", Header: http.Header{}}
		loc := rs.rules[1].location(r, "web.ns:80")
		if strings.ContainsAny(loc, "\r\n\x00") {
			t.Fatalf("Location %q", loc)
		}
		if l, err := url.Parse(loc); err != nil || !l.IsAbs() {
			t.Fatalf("Location %q does not parse: %v", loc, err)
		}
		rs.rules[0].rewrite(r)
		if !strings.HasPrefix(r.URL.Path, "/") || strings.ContainsAny(r.URL.EscapedPath(), "\r\n\x00 ") {
			t.Fatalf("rewritten path %q", r.URL.Path)
		}
	})
}
