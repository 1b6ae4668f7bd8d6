package authz

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

const (
	web   = "spiffe://cluster.local/ns/shop/sa/web"
	admin = "spiffe://cluster.local/ns/ops/sa/admin"
	alien = "spiffe://other.org/ns/shop/sa/web"
)

var defs = Defaults{Access: apiv1.AccessPolicy_ALL_UNAUTHENTICATED, TrustDomain: "cluster.local"}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

type call struct {
	id     string // mesh identity ("" without mesh TLS)
	ip     string
	conn   bool
	method string
	path   string
	hdr    http.Header
}

func (c call) input() Input {
	in := Input{Identity: c.id, TLS: c.id != "", Conn: c.conn, Method: c.method, Path: c.path, Header: c.hdr}
	if c.ip == "" {
		c.ip = "10.0.0.9"
	}
	in.ClientIP = ip(c.ip)
	if in.Method == "" {
		in.Method = http.MethodGet
	}
	if in.Path == "" {
		in.Path = "/"
	}
	return in
}

type want struct {
	allowed, audited bool
	authz, route     string
	reason           string
}

func check(t *testing.T, p *Policy, c call, w want) {
	t.Helper()
	d := p.Decide(c.input())
	if d.Allowed != w.allowed || d.Audited != w.audited || d.Authz != w.authz || d.Route != w.route || d.Reason != w.reason {
		t.Errorf("Decide(%+v) = %+v, want %+v", c, d, w)
	}
	if (!d.Allowed || d.Audited) && (d.Msg == "" || !strings.Contains(d.Msg, d.Server)) {
		t.Errorf("Decide(%+v): message %q does not name server %q", c, d.Msg, d.Server)
	}
	if d.Allowed && !d.Audited && d.Msg != "" {
		t.Errorf("Decide(%+v): allowed with a message %q", c, d.Msg)
	}
}

func mustCompile(t *testing.T, sp *apiv1.ServerPolicy, def Defaults) *Policy {
	t.Helper()
	p, err := Compile(sp, def)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return p
}

// TestAccess: what each access policy does with a call no authorization
// allows, and that an authorization allows whatever the access.
func TestAccess(t *testing.T) {
	onlyAdmin := []*apiv1.Authorization{{Name: "admin-only", Identities: []string{admin}}}
	tests := []struct {
		access apiv1.AccessPolicy
		audit  bool
		def    apiv1.AccessPolicy
		c      call
		w      want
	}{
		{access: apiv1.AccessPolicy_DENY, c: call{id: web}, w: want{reason: ReasonUnauthorized}},
		{access: apiv1.AccessPolicy_DENY, c: call{}, w: want{reason: ReasonUnauthorized}},
		{access: apiv1.AccessPolicy_DENY, c: call{id: admin}, w: want{allowed: true, authz: "admin-only"}},
		{access: apiv1.AccessPolicy_AUDIT, c: call{id: web}, w: want{allowed: true, audited: true, reason: ReasonUnauthorized}},
		{access: apiv1.AccessPolicy_AUDIT, c: call{id: admin}, w: want{allowed: true, authz: "admin-only"}},
		{audit: true, c: call{}, w: want{allowed: true, audited: true, reason: ReasonUnauthorized}},
		{access: apiv1.AccessPolicy_DENY, audit: true, c: call{}, w: want{reason: ReasonUnauthorized}},
		{access: apiv1.AccessPolicy_ALL_AUTHENTICATED, c: call{id: web}, w: want{allowed: true, authz: "access:all-authenticated"}},
		{access: apiv1.AccessPolicy_ALL_AUTHENTICATED, c: call{id: alien}, w: want{allowed: true, authz: "access:all-authenticated"}},
		{access: apiv1.AccessPolicy_ALL_AUTHENTICATED, c: call{}, w: want{reason: ReasonUnauthenticated}},
		{access: apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, c: call{id: web}, w: want{allowed: true, authz: "access:cluster-authenticated"}},
		{access: apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, c: call{id: alien}, w: want{reason: ReasonForeignTrustDomain}},
		{access: apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, c: call{}, w: want{reason: ReasonUnauthenticated}},
		{access: apiv1.AccessPolicy_ALL_UNAUTHENTICATED, c: call{}, w: want{allowed: true, authz: "access:all-unauthenticated"}},
		// Unspecified: the proxy's default.
		{def: apiv1.AccessPolicy_DENY, c: call{id: web}, w: want{reason: ReasonUnauthorized}},
		{def: apiv1.AccessPolicy_CLUSTER_AUTHENTICATED, c: call{id: web}, w: want{allowed: true, authz: "access:cluster-authenticated"}},
		{def: apiv1.AccessPolicy_ACCESS_UNSPECIFIED, c: call{}, w: want{allowed: true, authz: "access:all-unauthenticated"}},
	}
	for _, tt := range tests {
		name := tt.access.String() + "/default=" + tt.def.String()
		t.Run(name, func(t *testing.T) {
			p := mustCompile(t, &apiv1.ServerPolicy{Name: "books", Access: tt.access, Audit: tt.audit, Authorizations: onlyAdmin},
				Defaults{Access: tt.def, TrustDomain: "cluster.local"})
			check(t, p, tt.c, tt.w)
			if p.Server() != "books" {
				t.Errorf("server label %q, want books", p.Server())
			}
		})
	}
}

// TestSourceDefault: an answer of source "default" takes the proxy's
// configured default as access, whatever access it carries, and is
// labelled default:<access>; its probes route still lets kubelet in.
func TestSourceDefault(t *testing.T) {
	sp := &apiv1.ServerPolicy{Name: "default", Source: SourceDefault, Access: apiv1.AccessPolicy_ALL_UNAUTHENTICATED,
		Authorizations: []*apiv1.Authorization{{Name: "all", Unauthenticated: true}},
		Routes: []*apiv1.InboundRoute{{Name: "probes",
			Matches:        []*apiv1.RouteMatch{{PathExact: "/healthz", Method: "GET"}, {PathExact: "/ready", Method: "GET"}},
			Authorizations: []*apiv1.Authorization{{Name: "probes", Unauthenticated: true}}}}}
	p := mustCompile(t, sp, Defaults{Access: apiv1.AccessPolicy_DENY, TrustDomain: "cluster.local"})
	if p.Server() != "default:deny" {
		t.Errorf("server %q, want default:deny", p.Server())
	}
	check(t, p, call{path: "/healthz"}, want{allowed: true, authz: "probes", route: "probes"})
	check(t, p, call{path: "/ready"}, want{allowed: true, authz: "probes", route: "probes"})
	check(t, p, call{method: "POST", path: "/healthz"}, want{reason: ReasonUnauthorized})
	check(t, p, call{path: "/"}, want{reason: ReasonUnauthorized})
	check(t, p, call{id: web, path: "/api"}, want{reason: ReasonUnauthorized})
	// A connection matches no route: the probes route does not open TCP.
	check(t, p, call{conn: true}, want{reason: ReasonUnauthorized})
}

// TestLegacyDefault: the default answer of a controller from before the
// access field (named "default", an allow-all authorization) is the
// default: the proxy's configured default decides, not the allow-all.
func TestLegacyDefault(t *testing.T) {
	sp := &apiv1.ServerPolicy{Name: "default", Authorizations: []*apiv1.Authorization{
		{Name: "all-unauthenticated", Unauthenticated: true, Identities: []string{"*"}}}}
	p := mustCompile(t, sp, Defaults{Access: apiv1.AccessPolicy_ALL_AUTHENTICATED})
	if p.Server() != "default:all-authenticated" {
		t.Errorf("server %q", p.Server())
	}
	check(t, p, call{}, want{reason: ReasonUnauthenticated})
	check(t, p, call{id: web}, want{allowed: true, authz: "access:all-authenticated"})
	// A Server's answer is not a default, whatever its authorizations.
	sp = &apiv1.ServerPolicy{Name: "server/default", Authorizations: sp.Authorizations}
	check(t, mustCompile(t, sp, Defaults{Access: apiv1.AccessPolicy_DENY}), call{}, want{allowed: true, authz: "all-unauthenticated"})
}

// TestAuthorization: identities, "*", namespaces, unauthenticated, and
// networks with exceptions (old networks too), with a deny access.
func TestAuthorization(t *testing.T) {
	tests := []struct {
		name string
		a    *apiv1.Authorization
		c    call
		ok   bool
	}{
		{"exact identity", &apiv1.Authorization{Identities: []string{web}}, call{id: web}, true},
		{"other identity", &apiv1.Authorization{Identities: []string{web}}, call{id: admin}, false},
		{"identity without TLS", &apiv1.Authorization{Identities: []string{web}}, call{}, false},
		{"star: any identity", &apiv1.Authorization{Identities: []string{"*"}}, call{id: alien}, true},
		{"star: not unauthenticated", &apiv1.Authorization{Identities: []string{"*"}}, call{}, false},
		{"namespace", &apiv1.Authorization{Namespaces: []string{"shop"}}, call{id: web}, true},
		{"namespace of another trust domain", &apiv1.Authorization{Namespaces: []string{"shop"}}, call{id: alien}, true},
		{"other namespace", &apiv1.Authorization{Namespaces: []string{"shop"}}, call{id: admin}, false},
		{"namespace prefix is not a namespace", &apiv1.Authorization{Namespaces: []string{"sho"}}, call{id: web}, false},
		{"namespace needs an identity", &apiv1.Authorization{Namespaces: []string{"shop"}}, call{}, false},
		{"unauthenticated", &apiv1.Authorization{Unauthenticated: true}, call{}, true},
		{"unauthenticated lets identities in too", &apiv1.Authorization{Unauthenticated: true}, call{id: web}, true},
		{"nothing named allows nobody", &apiv1.Authorization{}, call{id: web}, false},
		{"net in", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}, call{ip: "10.1.2.3"}, true},
		{"net out", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}, call{ip: "192.168.1.1"}, false},
		{"net except", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}}, call{ip: "10.9.1.1"}, false},
		{"net except, other net", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{
			{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}, {Cidr: "10.9.1.0/24"}}}, call{ip: "10.9.1.1"}, true},
		{"net outside except", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}}, call{ip: "10.8.1.1"}, true},
		{"net and identity: both", &apiv1.Authorization{Identities: []string{web}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}, call{id: web, ip: "10.0.0.1"}, true},
		{"net and identity: wrong net", &apiv1.Authorization{Identities: []string{web}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}, call{id: web, ip: "11.0.0.1"}, false},
		{"net only, no unauthenticated", &apiv1.Authorization{Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8"}}}, call{ip: "10.0.0.1"}, false},
		{"old networks", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"10.0.0.0/8"}}, call{ip: "10.0.0.1"}, true},
		{"old networks out", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"10.0.0.0/8"}}, call{ip: "12.0.0.1"}, false},
		{"host network", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"10.0.0.1/32"}}, call{ip: "10.0.0.1"}, true},
		{"mapped network", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"::ffff:10.0.0.0/104"}}, call{ip: "10.0.0.1"}, true},
		{"mapped caller, v4 net", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"10.0.0.0/8"}}, call{ip: "::ffff:10.0.0.1"}, true},
		{"v6 net", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "fd00::/8"}}}, call{ip: "fd00::1"}, true},
		{"v6 net, v4 caller", &apiv1.Authorization{Unauthenticated: true, Nets: []*apiv1.Network{{Cidr: "::/0"}}}, call{ip: "10.0.0.1"}, false},
		{"unmasked cidr", &apiv1.Authorization{Unauthenticated: true, Networks: []string{"10.1.2.3/16"}}, call{ip: "10.1.9.9"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.a.Name = "a"
			p := mustCompile(t, &apiv1.ServerPolicy{Name: "s", Access: apiv1.AccessPolicy_DENY, Authorizations: []*apiv1.Authorization{tt.a}}, defs)
			w := want{reason: ReasonUnauthorized}
			if tt.ok {
				w = want{allowed: true, authz: "a"}
			}
			check(t, p, tt.c, w)
		})
	}
}

// TestInvalidClientIP: a network authorization never allows a caller
// whose address is unknown.
func TestInvalidClientIP(t *testing.T) {
	p := mustCompile(t, &apiv1.ServerPolicy{Access: apiv1.AccessPolicy_DENY, Authorizations: []*apiv1.Authorization{
		{Name: "all", Unauthenticated: true, Networks: []string{"0.0.0.0/0", "::/0"}}}}, defs)
	if d := p.Decide(Input{Method: "GET", Path: "/"}); d.Allowed {
		t.Errorf("zero client IP allowed: %+v", d)
	}
}

// TestLimitedPortRefusesStreams: a port whose HTTP requests are limited
// refuses a stream that is not HTTP (it would escape the limit), whatever
// allows the caller, unless the port is declared opaque; requests are
// decided as before.
func TestLimitedPortRefusesStreams(t *testing.T) {
	all := []*apiv1.Authorization{{Name: "all", Unauthenticated: true}}
	tests := []struct {
		name   string
		limits *apiv1.Limits
		proto  apiv1.ProtocolHint_Protocol
		want   want
	}{
		{"no limits", nil, 0, want{allowed: true, authz: "all"}},
		{"burst alone limits nothing", &apiv1.Limits{Burst: 5}, 0, want{allowed: true, authz: "all"}},
		{"rate", &apiv1.Limits{RequestsPerSecond: 100}, 0, want{reason: ReasonNotHTTP}},
		{"concurrency", &apiv1.Limits{MaxConcurrency: 10}, 0, want{reason: ReasonNotHTTP}},
		{"per client", &apiv1.Limits{ClientRequestsPerSecond: 5}, 0, want{reason: ReasonNotHTTP}},
		{"override", &apiv1.Limits{Overrides: []*apiv1.ClientLimit{{}}}, 0, want{reason: ReasonNotHTTP}},
		{"adaptive", &apiv1.Limits{AdaptiveConcurrency: &apiv1.AdaptiveConcurrency{}}, 0, want{reason: ReasonNotHTTP}},
		{"rate on an opaque port", &apiv1.Limits{RequestsPerSecond: 100}, apiv1.ProtocolHint_OPAQUE, want{allowed: true, authz: "all"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustCompile(t, &apiv1.ServerPolicy{Name: "echo", Access: apiv1.AccessPolicy_DENY, Authorizations: all,
				Limits: tt.limits, Protocol: tt.proto}, Defaults{TrustDomain: "cluster.local"})
			check(t, p, call{conn: true, id: web}, tt.want)
			check(t, p, call{id: web, path: "/"}, want{allowed: true, authz: "all"})
		})
	}
}
