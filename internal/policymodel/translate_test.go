package policymodel

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func loadSet(t *testing.T, path string) *Set {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set, err := Decode(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return set
}

func podsNamed(set *Set, ns string, names ...string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, p := range set.PodsInNamespace(ns) {
		for _, n := range names {
			if p.Name == n {
				out = append(out, p)
			}
		}
	}
	return out
}

func TestTranslate(t *testing.T) {
	set := loadSet(t, "testdata/policy.yaml")
	webHTTP := `protocol: HTTP1 name: "server/web-http" access: AUDIT audit: true source: "server"
		authorizations: {name: "a-web-lb" unauthenticated: true nets: {cidr: "10.0.0.0/8" except: "10.0.0.0/9" except: "10.192.0.0/10"}}
		authorizations: {name: "ns-monitoring" identities: "*" namespaces: "monitoring"}
		authorizations: {name: "web-from-mesh" identities: "spiffe://cluster.local/ns/shop/sa/gateway"
			identities: "spiffe://cluster.local/ns/shop/sa/checkout" identities: "spiffe://cluster.local/ns/pay/sa/billing" namespaces: "ops"}
		routes: {name: "shop/admin" matches: {path_prefix: "/admin" method: "POST"}
			matches: {path_exact: "/admin/login" headers: {name: "x-tenant" value: "a.*" regex: true}}
			authorizations: {name: "admin-only" identities: "spiffe://cluster.local/ns/ops/sa/admin"}}
		routes: {name: "shop/health" matches: {path_exact: "/healthz" method: "GET"} authorizations: {name: "health-open" unauthenticated: true}}`
	def := `name: "default" source: "default"`
	for _, tc := range []struct {
		name, ns string
		pods     []string
		port     uint32
		want     string // prototext of the ServerPolicy
	}{
		{"named port, oldest Server, audit, policies of the Server and the namespace, nets, routes", "shop", []string{"web-1"}, 8080, webHTTP},
		{"the pod's own Server: same identity, other labels", "shop", []string{"web-canary"}, 8080,
			`name: "server/web-all" access: ALL_AUTHENTICATED source: "server"
			 authorizations: {name: "ns-monitoring" identities: "*" namespaces: "monitoring"}`},
		{"by identity: every pod, the oldest Server wins", "shop", []string{"web-canary", "web-1"}, 8080, webHTTP},
		{"no accessPolicy is deny", "shop", []string{"web-1"}, 9090,
			`name: "server/web-admin" access: DENY source: "server" authorizations: {name: "ns-monitoring" identities: "*" namespaces: "monitoring"}`},
		{"no Server: default with the probes of that port", "shop", []string{"web-1"}, 9100,
			def + ` routes: {name: "probes" matches: {method: "GET" path_exact: "/healthz"} authorizations: {name: "probes" unauthenticated: true}}`},
		{"no Server, no probes", "shop", []string{"web-1"}, 8081, def},
		{"gRPC, matchExpressions, routes by service and method, oldest RateLimit", "shop", []string{"books-1"}, 7000,
			`protocol: GRPC name: "server/backend" access: CLUSTER_AUTHENTICATED source: "server"
			 authorizations: {name: "ns-monitoring" identities: "*" namespaces: "monitoring"}
			 routes: {name: "shop/books-read" matches: {path_exact: "/books.v1.Books/Get"} matches: {path_prefix: "/books.v1.Admin/"}
				authorizations: {name: "books-readers" identities: "spiffe://cluster.local/ns/shop/sa/web"}}
			 limits: {requests_per_second: 100 max_concurrency: 10 burst: 200}`},
		{"Servers of another namespace do not apply; a probe without path is /", "other", []string{"other-1"}, 8080,
			def + ` routes: {name: "probes" matches: {method: "GET" path_exact: "/"} authorizations: {name: "probes" unauthenticated: true}}`},
		{"no pods: default", "shop", nil, 8080, def},
		{"RateLimit: per-client rate, overrides by identity and ServiceAccount, adaptive concurrency, the probes of that port exempt", "limits", []string{"api-1"}, 8080,
			`name: "server/api" access: ALL_AUTHENTICATED source: "server"
			 limits: {requests_per_second: 1000 client_requests_per_second: 100
				overrides: {identities: "spiffe://cluster.local/ns/shop/sa/batch" identities: "spiffe://cluster.local/ns/limits/sa/batch"
					identities: "spiffe://cluster.local/ns/shop/sa/web" requests_per_second: 10 burst: 20}
				overrides: {identities: "spiffe://cluster.local/ns/edge/sa/gateway" requests_per_second: 500}
				adaptive_concurrency: {max_limit: 200}
				probes: {name: "probes" matches: {method: "GET" path_exact: "/live"} matches: {method: "GET" path_exact: "/ready"}
					authorizations: {name: "probes" unauthenticated: true}}}`},
		{"an invalid RateLimit limits nothing; adaptive off", "limits", []string{"api-1"}, 9090,
			`name: "server/bad" access: DENY source: "server"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := &apiv1.ServerPolicy{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatal(err)
			}
			in := Input{Pods: podsNamed(set, tc.ns, tc.pods...), Port: tc.port, TrustDomain: "cluster.local", Objects: set.InNamespace(tc.ns)}
			if got := Translate(in); !proto.Equal(got, want) {
				t.Errorf("got  %v\nwant %v", prototext.Format(got), prototext.Format(want))
			}
		})
	}
}

func TestAccept(t *testing.T) {
	set := loadSet(t, "testdata/policy.yaml")
	o := set.InNamespace("shop")
	got := map[string]Verdict{}
	for _, s := range o.Servers {
		got["server/"+s.Name] = AcceptServer(s, o.Servers, set.Pods)
	}
	for _, ap := range o.Authz {
		got["authz/"+ap.Name] = AcceptAuthorizationPolicy(ap, o, "cluster.local")
	}
	for _, rl := range o.RateLimits {
		got["ratelimit/"+rl.Name] = AcceptRateLimit(rl, o.Servers, o.RateLimits, "cluster.local", nil)
	}
	lim := set.InNamespace("limits")
	for _, rl := range lim.RateLimits {
		got["ratelimit/"+rl.Name] = AcceptRateLimit(rl, lim.Servers, lim.RateLimits, "cluster.local", nil)
	}
	for _, tc := range []struct {
		key, reason, refsReason, mentions string
	}{
		{"ratelimit/api-limit", "Accepted", "ResolvedRefs", ""},
		{"ratelimit/bad-override", "Invalid", "ResolvedRefs", "overrides[0].clients.identities[0]"},
		{"server/web-http", "Accepted", "", ""},
		{"server/web-admin", "Accepted", "", ""},
		{"server/web-all", "Conflict", "", `pod web-1 port 8080 is already selected by the older Server "web-http"`},
		{"authz/web-from-mesh", "Accepted", "ResolvedRefs", ""},
		{"authz/ns-monitoring", "Accepted", "ResolvedRefs", ""},
		{"authz/admin-only", "Accepted", "ResolvedRefs", ""},
		{"authz/books-readers", "Accepted", "ResolvedRefs", ""},
		{"authz/to-nowhere", "TargetNotFound", "TargetNotFound", `Server "missing"`},
		{"authz/other-ns", "RefNotPermitted", "RefNotPermitted", `Namespace "other"`},
		{"authz/via-ingress", "TargetNotFound", "TargetNotFound", `HTTPRoute "ingress", whose parentRefs name no existing Server`},
		{"authz/bad-id", "Invalid", "ResolvedRefs", `identities[0]`},
		{"ratelimit/backend-limit", "Accepted", "ResolvedRefs", ""},
		{"ratelimit/backend-limit-2", "Conflict", "ResolvedRefs", `older RateLimit "backend-limit"`},
	} {
		v, ok := got[tc.key]
		if !ok {
			t.Errorf("%s: no verdict", tc.key)
			continue
		}
		if v.Accepted.Reason != tc.reason || v.Accepted.OK != (tc.reason == "Accepted") || !strings.Contains(v.Accepted.Message, tc.mentions) {
			t.Errorf("%s: Accepted = %+v, want reason %s mentioning %q", tc.key, v.Accepted, tc.reason, tc.mentions)
		}
		if gotRefs := refsReason(v); gotRefs != tc.refsReason {
			t.Errorf("%s: ResolvedRefs reason %q, want %q", tc.key, gotRefs, tc.refsReason)
		}
		if strings.Contains(v.Accepted.Message, "in use") || strings.Contains(v.Accepted.Message, "enforced") {
			t.Errorf("%s: message %q claims what the controller cannot know", tc.key, v.Accepted.Message)
		}
	}
}

func refsReason(v Verdict) string {
	if v.ResolvedRefs == nil {
		return ""
	}
	return v.ResolvedRefs.Reason
}
