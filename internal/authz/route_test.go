package authz

import (
	"net/http"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func rt(name string, authz *apiv1.Authorization, ms ...*apiv1.RouteMatch) *apiv1.InboundRoute {
	r := &apiv1.InboundRoute{Name: name, Matches: ms}
	if authz != nil {
		r.Authorizations = []*apiv1.Authorization{authz}
	}
	return r
}

// TestRoutes: the most specific route wins (exact path > longest prefix >
// method > header count, then the earlier route), and only its
// authorizations add to the server's.
func TestRoutes(t *testing.T) {
	open := &apiv1.Authorization{Name: "open", Unauthenticated: true}
	onlyAdmin := &apiv1.Authorization{Name: "admin", Identities: []string{admin}}
	onlyWeb := &apiv1.Authorization{Name: "web", Identities: []string{web}}
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	sp := &apiv1.ServerPolicy{Name: "books", Access: apiv1.AccessPolicy_DENY,
		Authorizations: []*apiv1.Authorization{{Name: "server-web", Identities: []string{web}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}},
		Routes: []*apiv1.InboundRoute{
			rt("all", nil),
			rt("healthz", open, &apiv1.RouteMatch{PathExact: "/healthz", Method: "GET"}),
			rt("admin", onlyAdmin, &apiv1.RouteMatch{PathPrefix: "/admin/"}),
			rt("admin-public", open, &apiv1.RouteMatch{PathPrefix: "/admin/public"}),
			rt("admin-exact", onlyWeb, &apiv1.RouteMatch{PathExact: "/admin/web"}),
			rt("post-api", onlyAdmin, &apiv1.RouteMatch{PathPrefix: "/api", Method: "POST"}),
			rt("api", onlyWeb, &apiv1.RouteMatch{PathPrefix: "/api"}),
			rt("api-beta", open, &apiv1.RouteMatch{PathPrefix: "/api", Method: "POST", Headers: []*apiv1.RouteMatch_Header{{Name: "x-beta", Value: "1"}}}),
			rt("api-canary", open, &apiv1.RouteMatch{PathPrefix: "/api", Method: "POST", Headers: []*apiv1.RouteMatch_Header{{Name: "X-Canary", Value: "c[0-9]+", Regex: true}}}),
			rt("api-dup", open, &apiv1.RouteMatch{PathPrefix: "/api"}), // loses the tie to "api"
			rt("grpc", onlyWeb, &apiv1.RouteMatch{PathPrefix: "/shop.Books/"}),
		}}
	p := mustCompile(t, sp, defs)
	tests := []struct {
		name string
		c    call
		w    want
	}{
		{"catch-all route, no authz of its own", call{path: "/x"}, want{route: "all", reason: ReasonUnauthorized}},
		{"server authz still allows on any route", call{id: web, path: "/admin/x"}, want{allowed: true, authz: "server-web", route: "admin"}},
		{"server authz, wrong network", call{id: web, ip: "192.168.0.1", path: "/admin/x"}, want{route: "admin", reason: ReasonUnauthorized}},
		{"exact path and method", call{path: "/healthz"}, want{allowed: true, authz: "open", route: "healthz"}},
		{"exact path, other method", call{method: "POST", path: "/healthz"}, want{route: "all", reason: ReasonUnauthorized}},
		{"exact path: no prefix semantics", call{path: "/healthz/x"}, want{route: "all", reason: ReasonUnauthorized}},
		{"prefix, allowed identity", call{id: admin, path: "/admin/users"}, want{allowed: true, authz: "admin", route: "admin"}},
		{"prefix trailing slash: the bare path", call{id: admin, path: "/admin"}, want{allowed: true, authz: "admin", route: "admin"}},
		{"prefix matches whole segments", call{id: admin, path: "/administrator"}, want{route: "all", reason: ReasonUnauthorized}},
		{"longest prefix wins", call{path: "/admin/public/x"}, want{allowed: true, authz: "open", route: "admin-public"}},
		{"exact beats a longer prefix", call{id: web, ip: "192.168.0.1", path: "/admin/web"}, want{allowed: true, authz: "web", route: "admin-exact"}},
		{"dot segments resolved", call{path: "/admin/public/../users"}, want{route: "admin", reason: ReasonUnauthorized}},
		{"dot segments resolved, allowed", call{id: admin, path: "/admin/public/../users"}, want{allowed: true, authz: "admin", route: "admin"}},
		{"path parameter does not escape the route", call{path: "/admin;jsessionid=1/users"}, want{route: "admin", reason: ReasonUnauthorized}},
		{"double slash merged", call{path: "//admin//users"}, want{route: "admin", reason: ReasonUnauthorized}},
		{"method beats no method", call{method: "POST", path: "/api/books", id: web, ip: "1.1.1.1"}, want{route: "post-api", reason: ReasonUnauthorized}},
		{"without the method", call{path: "/api/books", id: web, ip: "1.1.1.1"}, want{allowed: true, authz: "web", route: "api"}},
		{"header count wins", call{method: "POST", path: "/api", hdr: hdr("X-Beta", "1")}, want{allowed: true, authz: "open", route: "api-beta"}},
		{"header value differs", call{method: "POST", path: "/api", hdr: hdr("X-Beta", "2")}, want{route: "post-api", reason: ReasonUnauthorized}},
		{"header regex full match", call{method: "POST", path: "/api", hdr: hdr("x-canary", "c42")}, want{allowed: true, authz: "open", route: "api-canary"}},
		{"header regex is anchored", call{method: "POST", path: "/api", hdr: hdr("x-canary", "xc42x")}, want{route: "post-api", reason: ReasonUnauthorized}},
		{"gRPC method path", call{method: "POST", path: "/shop.Books/Get", id: web, ip: "1.1.1.1"}, want{allowed: true, authz: "web", route: "grpc"}},
		{"connection: no route", call{conn: true, id: admin, path: "/admin/x"}, want{reason: ReasonUnauthorized}},
		{"connection: server authz", call{conn: true, id: web}, want{allowed: true, authz: "server-web"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { check(t, p, tt.c, tt.w) })
	}
}

// TestNoRoutes: without a catch-all, an unmatched request has no route.
func TestNoRoutes(t *testing.T) {
	p := mustCompile(t, &apiv1.ServerPolicy{Name: "s", Access: apiv1.AccessPolicy_DENY,
		Routes: []*apiv1.InboundRoute{rt("r", &apiv1.Authorization{Name: "o", Unauthenticated: true}, &apiv1.RouteMatch{PathPrefix: "/r"})}}, defs)
	check(t, p, call{path: "/x"}, want{reason: ReasonUnauthorized})
	check(t, p, call{path: "/r"}, want{allowed: true, authz: "o", route: "r"})
}

// TestCompileRefuses: a policy the proxy cannot enforce as written is
// refused with an error naming the part at fault.
func TestCompileRefuses(t *testing.T) {
	tests := []struct {
		name string
		sp   *apiv1.ServerPolicy
		want string
	}{
		{"nil", nil, "no policy"},
		{"bad cidr", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Nets: []*apiv1.Network{{Cidr: "10.0.0.0/33"}}}}}, `authorization "a": network: "10.0.0.0/33"`},
		{"bad except", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"x"}}}}}}, "except"},
		{"bare address", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Networks: []string{"10.0.0.1"}}}}, "not a CIDR"},
		{"bad old network", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Networks: []string{""}}}}, "network"},
		{"bad identity", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Identities: []string{"web"}}}}, "identity"},
		{"empty namespace", &apiv1.ServerPolicy{Name: "s", Authorizations: []*apiv1.Authorization{{Name: "a", Namespaces: []string{""}}}}, "namespace"},
		{"unknown access", &apiv1.ServerPolicy{Name: "s", Access: 42}, "unknown access"},
		{"route authz", &apiv1.ServerPolicy{Name: "s", Routes: []*apiv1.InboundRoute{{Name: "r", Authorizations: []*apiv1.Authorization{{Name: "a", Networks: []string{"1.2.3.4/99"}}}}}}, `route "r"`},
		{"route bad regex", &apiv1.ServerPolicy{Name: "s", Routes: []*apiv1.InboundRoute{rt("r", nil, &apiv1.RouteMatch{Headers: []*apiv1.RouteMatch_Header{{Name: "x", Value: "(", Regex: true}}})}}, "header"},
		{"route bad path", &apiv1.ServerPolicy{Name: "s", Routes: []*apiv1.InboundRoute{rt("r", nil, &apiv1.RouteMatch{PathPrefix: "api"})}}, "path_prefix"},
		{"route both paths", &apiv1.ServerPolicy{Name: "s", Routes: []*apiv1.InboundRoute{rt("r", nil, &apiv1.RouteMatch{PathPrefix: "/a", PathExact: "/a"})}}, "both"},
		{"route bad method", &apiv1.ServerPolicy{Name: "s", Routes: []*apiv1.InboundRoute{rt("r", nil, &apiv1.RouteMatch{Method: "GE T"})}}, "method"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.sp, defs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Compile: %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := Compile(&apiv1.ServerPolicy{}, Defaults{Access: 9}); err == nil {
		t.Error("an unknown default access compiled")
	}
}

// TestDecideAllocs: an allowed request costs no allocation.
func TestDecideAllocs(t *testing.T) {
	p := benchPolicy(100)
	in := Input{Identity: benchIdentity(99), TLS: true, ClientIP: ip("10.1.2.3"), Method: "GET", Path: "/books/1", Header: http.Header{"X-Req": {"1"}}}
	if d := p.Decide(in); !d.Allowed {
		t.Fatalf("not allowed: %+v", d)
	}
	if n := testing.AllocsPerRun(100, func() { p.Decide(in) }); n != 0 {
		t.Errorf("Decide allocates %v times per call", n)
	}
}

// TestAmbiguousPath: a route's authorizations apply to a path the app may
// read as another route (params before dot segments, encoded slashes or
// dots, dot segments) only if that route's allow the caller too; the
// server's and the access policy still decide.
func TestAmbiguousPath(t *testing.T) {
	open := &apiv1.Authorization{Name: "open", Unauthenticated: true}
	sp := &apiv1.ServerPolicy{Name: "books", Access: apiv1.AccessPolicy_DENY,
		Authorizations: []*apiv1.Authorization{{Name: "web", Identities: []string{web}}},
		Routes: []*apiv1.InboundRoute{rt("public", open, &apiv1.RouteMatch{PathPrefix: "/public"}),
			rt("root", open, &apiv1.RouteMatch{PathExact: "/"})}}
	p := mustCompile(t, sp, defs)
	for _, tt := range []struct {
		path, raw string
		id        string
		w         want
	}{
		{"/public/a", "/public/a", "", want{allowed: true, authz: "open", route: "public"}},
		{"/public;jsessionid=1/a", "/public;jsessionid=1/a", "", want{allowed: true, authz: "open", route: "public"}},
		{"/admin/..;/public", "/admin/..;/public", "", want{route: "public", reason: ReasonUnauthorized}},
		{"/admin/x/../../public", "/admin/x%2F..%2F..%2Fpublic", "", want{route: "public", reason: ReasonUnauthorized}},
		{"/admin/x/../../public", "/admin/x/%2e%2e/%2e%2e/public", "", want{route: "public", reason: ReasonUnauthorized}},
		{"/admin/../public", "/admin/../public", "", want{route: "public", reason: ReasonUnauthorized}},
		{"/admin/..;/public", "/admin/..;/public", web, want{allowed: true, authz: "web", route: "public"}},
		// Both readings open: allowed.
		{"/public/x/../a", "/public/x/../a", "", want{allowed: true, authz: "open", route: "public"}},
		// CONNECT's authority form has no path; "" must not read as "/".
		{"", "", "", want{reason: ReasonUnauthorized}},
	} {
		in := call{id: tt.id, path: tt.path}.input()
		if tt.path == "" {
			in.Method, in.Path = http.MethodConnect, ""
		}
		in.RawPath = tt.raw
		d := p.Decide(in)
		if d.Allowed != tt.w.allowed || d.Authz != tt.w.authz || d.Route != tt.w.route || d.Reason != tt.w.reason {
			t.Errorf("Decide(%q as %q) = %+v, want %+v", tt.path, tt.raw, d, tt.w)
		}
	}
}
