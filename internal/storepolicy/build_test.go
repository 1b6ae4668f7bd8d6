package storepolicy

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// parse decodes a store file and builds its policies.
func parse(data []byte) (Policies, error) {
	var f meshconfig.File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return Policies{}, err
	}
	return Build(f.Policies)
}

const policyBase = `
services:
  - {name: books, namespace: demo, ports: [{port: 80, protocol: http}]}
workloads:
  - name: books
    namespace: demo
    serviceAccount: books
    token: tok-books-0123456789
    proxyAddr: 127.0.0.1:4243
    labels: {app: books}
    endpoints: [{service: books, port: 80, targetPort: 9101}]
policies:
`

const goodServer = `
  - apiVersion: policy.trellis.io/v1alpha1
    kind: Server
    metadata: {name: books-http, namespace: demo}
    spec: {podSelector: {matchLabels: {app: books}}, port: 9101, protocol: HTTP/1, accessPolicy: audit}
`

func TestPoliciesAccepted(t *testing.T) {
	p, err := parse([]byte(policyBase + goodServer + `
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: books-from-web, namespace: demo, labels: {team: x}}
    spec:
      targetRef: {kind: Server, name: books-http}
      identities: ["spiffe://cluster.local/ns/demo/sa/web"]
      networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: admin, namespace: demo}
    spec:
      parentRefs: [{group: policy.trellis.io, kind: Server, name: books-http}]
      rules: [{matches: [{path: {type: PathPrefix, value: /admin}, method: POST}]}]
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: admin-ops, namespace: demo}
    spec:
      targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}
      namespaces: [ops]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Servers) != 1 || len(p.AuthorizationPolicies) != 2 || len(p.HTTPRoutes) != 1 {
		t.Fatalf("policies %+v", p)
	}
	if s := p.Servers[0]; s.Name != "books-http" || s.Namespace != "demo" || s.Spec.Port.IntVal != 9101 || s.Spec.AccessPolicy != policyv1.AccessAudit {
		t.Errorf("server %+v", s)
	}
	if a := p.AuthorizationPolicies[0]; a.Spec.Networks[0].Except[0] != "10.1.0.0/16" || a.Spec.Identities[0] != "spiffe://cluster.local/ns/demo/sa/web" {
		t.Errorf("authorization policy %+v", a.Spec)
	}
}

// Every refusal names the object and the field at fault.
func TestPoliciesRefused(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown kind", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Gateway, metadata: {name: a, namespace: demo}, spec: {}}`,
			[]string{"policies[0]", "kind", `"Gateway"`}},
		{"wrong apiVersion", `
  - {apiVersion: policy.trellis.io/v1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 1}}`,
			[]string{"policies[0]", "apiVersion", "policy.trellis.io/v1alpha1"}},
		{"no namespace", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a}, spec: {port: 1}}`,
			[]string{"policies[0]", "metadata.namespace"}},
		{"no spec", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}}`,
			[]string{"policies[0]", "spec: required"}},
		{"typo in spec", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 1, protocl: HTTP/1}}`,
			[]string{"Server demo/a", "spec", "protocl"}},
		{"named port", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: http}}`,
			[]string{"Server demo/a", "spec.port", `"http"`}},
		{"port out of range", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 70000}}`,
			[]string{"Server demo/a", "spec.port"}},
		{"bad accessPolicy", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 1, accessPolicy: allow}}`,
			[]string{"Server demo/a", "spec.accessPolicy", `"allow"`, "audit"}},
		{"bad protocol", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 1, protocol: http}}`,
			[]string{"Server demo/a", "spec.protocol", `"http"`}},
		{"bad operator", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: a, namespace: demo}, spec: {port: 1, podSelector: {matchExpressions: [{key: app, operator: Is}]}}}`,
			[]string{"Server demo/a", "matchExpressions[0].operator"}},
		{"duplicate", goodServer + goodServer, []string{"policies[1]", "duplicate Server"}},
		{"bad identity", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, identities: [web]}}`,
			[]string{"AuthorizationPolicy demo/p", "spec.identities[0]", `"web"`}},
		{"bad cidr", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, networks: [{cidr: 10.0.0.0}]}}`,
			[]string{"AuthorizationPolicy demo/p", "spec.networks[0]", "cidr"}},
		{"except outside", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, networks: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]}}`,
			[]string{"AuthorizationPolicy demo/p", "except[0]", "not inside"}},
		{"allows nobody", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}}}`,
			[]string{"AuthorizationPolicy demo/p", "allows nobody"}},
		{"missing target", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: bookz}, unauthenticated: true}}`,
			[]string{"AuthorizationPolicy demo/p", "targetRef", `"bookz"`}},
		{"target in another namespace", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: books-http, namespace: other}, spec: {port: 1}}
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, unauthenticated: true}}`,
			[]string{"AuthorizationPolicy demo/p", "targetRef", "namespace demo"}},
		{"bad service account", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, serviceAccounts: [{name: Web_1}]}}`,
			[]string{"AuthorizationPolicy demo/p", "spec.serviceAccounts[0]", "Web_1"}},
		{"grpc route parent not a server", `
  - {apiVersion: gateway.networking.k8s.io/v1, kind: GRPCRoute, metadata: {name: r, namespace: demo}, spec: {parentRefs: [{kind: Server, name: nope}]}}`,
			[]string{"GRPCRoute demo/r", "parentRefs[0]", `"nope"`}},
		{"route parent in another namespace", goodServer + `
  - {apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: r, namespace: demo}, spec: {parentRefs: [{kind: Server, name: books-http, namespace: other}]}}`,
			[]string{"HTTPRoute demo/r", "parentRefs[0]", "route's namespace"}},
		{"route parent not a server", `
  - {apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: r, namespace: demo}, spec: {parentRefs: [{name: gw}]}}`,
			[]string{"HTTPRoute demo/r", "parentRefs[0]", "Gateway", `"gw"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { refused(t, tt.yaml, tt.want) })
	}
}

func TestResolveAccess(t *testing.T) {
	p, err := parse([]byte(policyBase + goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: plain, namespace: demo}, spec: {port: 7000}}
`))
	if err != nil {
		t.Fatal(err)
	}
	books := []Workload{{Name: "books", Labels: map[string]string{"app": "books"}}}
	for _, tt := range []struct {
		port uint32
		want apiv1.AccessPolicy
		name string
	}{
		{9101, apiv1.AccessPolicy_AUDIT, "server/books-http"},
		{7000, apiv1.AccessPolicy_DENY, "server/plain"}, // no accessPolicy: deny
	} {
		sp := p.Answer("demo", books, tt.port, "cluster.local")
		if sp.GetAccess() != tt.want || sp.GetName() != tt.name || sp.GetSource() != policymodel.SourceServer {
			t.Errorf("port %d: %v, want %s access %v", tt.port, sp, tt.name, tt.want)
		}
	}
	if sp := p.Answer("other", books, 9101, "cluster.local"); sp.GetSource() != policymodel.SourceDefault {
		t.Errorf("another namespace got %v", sp)
	}
}

// RateLimits of a store file: a Server's (inbound, in the answer of the
// Server's port) and a Service's (outbound), each checked as the CRD and
// the controller would.
func TestRateLimitsInStore(t *testing.T) {
	p, err := parse([]byte(policyBase + goodServer + `
  - apiVersion: policy.trellis.io/v1alpha1
    kind: RateLimit
    metadata: {name: books-in, namespace: demo}
    spec: {targetRef: {kind: Server, name: books-http}, requestsPerSecond: 100, perClient: {requestsPerSecond: 10}}
  - apiVersion: policy.trellis.io/v1alpha1
    kind: RateLimit
    metadata: {name: books-out, namespace: demo}
    spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 5, burst: 10}
`))
	if err != nil {
		t.Fatal(err)
	}
	ans := p.Answer("demo", []Workload{{Name: "books", Labels: map[string]string{"app": "books"}}}, 9101, "cluster.local")
	if l := ans.GetLimits(); l.GetRequestsPerSecond() != 100 || l.GetClientRequestsPerSecond() != 10 {
		t.Errorf("inbound limits %v, want 100/s and 10/s per client", l)
	}
	if l := policymodel.ServiceLimit("demo", "books", p.RateLimits); l.GetName() != "demo/books-out" || l.GetRequestsPerSecond() != 5 || l.GetBurst() != 10 {
		t.Errorf("outbound limit %v, want demo/books-out 5/s burst 10", l)
	}
}

func TestRateLimitsRefused(t *testing.T) {
	for _, tt := range []struct {
		name, yaml string
		want       []string
	}{
		{"service limit with a server's field", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 5, concurrency: 2}}`,
			[]string{"RateLimit demo/l", "concurrency", "Server only"}},
		{"service limit without a rate", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Service, name: books}, perClient: {requestsPerSecond: 1}}}`,
			[]string{"RateLimit demo/l", "perClient"}},
		{"unknown kind", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Pod, name: books}, requestsPerSecond: 5}}`,
			[]string{"RateLimit demo/l", "spec.targetRef.kind", `"Pod"`}},
		{"service with a group", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {group: policy.trellis.io, kind: Service, name: books}, requestsPerSecond: 5}}`,
			[]string{"RateLimit demo/l", "spec.targetRef.group"}},
		{"rate out of range", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 0}}`,
			[]string{"RateLimit demo/l", "spec.requestsPerSecond", "between 1"}},
		{"burst without rate", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, burst: 5, concurrency: 1}}`,
			[]string{"RateLimit demo/l", "burst needs requestsPerSecond"}},
		{"missing server", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Server, name: nope}, requestsPerSecond: 5}}`,
			[]string{"RateLimit demo/l", "targetRef", `"nope"`}},
		{"two on one service", `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: a, namespace: demo}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 5}}
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: b, namespace: demo}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 6}}`,
			[]string{"RateLimit demo/b", `already limited by RateLimit "a"`}},
		{"bad override identity", goodServer + `
  - {apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: l, namespace: demo}, spec: {targetRef: {kind: Server, name: books-http}, overrides: [{clients: {identities: [web]}, requestsPerSecond: 1}]}}`,
			[]string{"RateLimit demo/l", "overrides[0].clients.identities[0]"}},
	} {
		t.Run(tt.name, func(t *testing.T) { refused(t, tt.yaml, tt.want) })
	}
}

// refused checks the store refuses policyBase+yaml with an error naming
// every one of want.
func refused(t *testing.T, yaml string, want []string) {
	t.Helper()
	_, err := parse([]byte(policyBase + yaml))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}
