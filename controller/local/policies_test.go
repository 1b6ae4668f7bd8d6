package local

import (
	"context"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/authz"
)

// policiesYAML: books v1 (labels version: v1) has a Server on 9101 with
// a policy for web and an HTTPRoute /admin open to namespace ops.
const policiesYAML = `
policies:
  - apiVersion: policy.trellis.io/v1alpha1
    kind: Server
    metadata: {name: books-v1, namespace: demo}
    spec: {podSelector: {matchLabels: {version: v1}}, port: 9101, protocol: HTTP/1}
  - apiVersion: policy.trellis.io/v1alpha1
    kind: Server
    metadata: {name: books-later, namespace: demo}
    spec: {podSelector: {}, port: 9101, protocol: gRPC}
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: from-web, namespace: demo}
    spec:
      targetRef: {kind: Server, name: books-v1}
      identities: ["spiffe://cluster.local/ns/demo/sa/web"]
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: from-lan, namespace: demo}
    spec:
      targetRef: {kind: Server, name: books-v1}
      networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
      namespaces: ["*"]
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: admin, namespace: demo}
    spec:
      parentRefs: [{group: policy.trellis.io, kind: Server, name: books-v1}]
      rules: [{matches: [{path: {type: Exact, value: /admin}, method: POST, headers: [{name: x-ops, value: "1"}]}]}]
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: admin-ops, namespace: demo}
    spec:
      targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}
      namespaces: [ops]
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: other-ns, namespace: other}
    spec:
      targetRef: {kind: Namespace, name: other}
      unauthenticated: true
`

func TestResolvePolicy(t *testing.T) {
	cfg, err := store.Parse([]byte(meshYAML + policiesYAML))
	if err != nil {
		t.Fatal(err)
	}
	books := booksID.String()
	serverBooks := &apiv1.ServerPolicy{
		Name: "server/books-v1", Source: "server", Protocol: apiv1.ProtocolHint_HTTP1, Access: apiv1.AccessPolicy_DENY,
		// By name, as internal/policymodel orders them on Kubernetes.
		Authorizations: []*apiv1.Authorization{
			{Name: "from-lan", Identities: []string{"*"}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}},
			{Name: "from-web", Identities: []string{"spiffe://cluster.local/ns/demo/sa/web"}},
		},
		Routes: []*apiv1.InboundRoute{{
			Name: "demo/admin",
			Matches: []*apiv1.RouteMatch{{PathExact: "/admin", Method: "POST",
				Headers: []*apiv1.RouteMatch_Header{{Name: "x-ops", Value: "1"}}}},
			Authorizations: []*apiv1.Authorization{{Name: "admin-ops", Namespaces: []string{"ops"}}},
		}},
	}
	tests := []struct {
		name     string
		workload string
		port     uint32
		want     *apiv1.ServerPolicy
	}{
		// books-v1 and books-v2 share the identity: the first Server of
		// the file that selects one of them wins.
		{"server selects the port", books, 9101, serverBooks},
		// The default keeps the protocol of the service port targeting it.
		{"no server on that port", books, 9102, &apiv1.ServerPolicy{Name: "default", Source: "default", Protocol: apiv1.ProtocolHint_HTTP1}},
		{"no server, no service", books, 9999, &apiv1.ServerPolicy{Name: "default", Source: "default"}},
		// The empty selector selects web; no policy targets it: nobody.
		{"server without policies", webID.String(), 9101, &apiv1.ServerPolicy{Name: "server/books-later", Source: "server", Protocol: apiv1.ProtocolHint_GRPC, Access: apiv1.AccessPolicy_DENY}},
		{"identity of no workload", "spiffe://cluster.local/ns/demo/sa/nobody", 9101, &apiv1.ServerPolicy{Name: "default", Source: "default"}},
		{"not an identity", "books", 9101, &apiv1.ServerPolicy{Name: "default", Source: "default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resolvePolicy(cfg, tt.workload, tt.port); !proto.Equal(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

// A policy added to, changed in and removed from the store file while a
// proxy watches is pushed to the open stream.
func TestPolicyEditPushed(t *testing.T) {
	e := startController(t, meshYAML)
	// Books watches its own policy, with its own certificate (the
	// controller may answer only the workload's identity).
	csr, cert := csrFor(t, booksID)
	resp, err := apiv1.NewIdentityClient(e.dial(t, nil)).Certify(context.Background(), &apiv1.CertifyRequest{
		Identity: booksID.String(), Token: []byte(tokenV2), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = resp.Chain
	pol := apiv1.NewPolicyClient(e.dial(t, cert))
	s := openStream[*apiv1.ServerPolicy](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.ServerPolicy, error)
	}, error) {
		return pol.WatchInbound(ctx, &apiv1.InboundPolicyRequest{Workload: booksID.String(), Port: 9101})
	})
	if p := s.next(t); p.GetSource() != "default" || p.GetAccess() != apiv1.AccessPolicy_ACCESS_UNSPECIFIED || len(p.GetAuthorizations()) != 0 {
		t.Fatalf("first answer %v, want the default", p)
	}
	e.writeAtomic(t, meshYAML+policiesYAML)
	p := s.next(t)
	if p.GetName() != "server/books-v1" || p.GetAccess() != apiv1.AccessPolicy_DENY || len(p.GetAuthorizations()) != 2 {
		t.Fatalf("after adding policies: %v", p)
	}
	// Revoke web: the answer keeps only the network policy.
	e.writeAtomic(t, meshYAML+strings.Replace(policiesYAML, `      identities: ["spiffe://cluster.local/ns/demo/sa/web"]`, `      identities: ["spiffe://cluster.local/ns/demo/sa/other"]`, 1))
	p = s.next(t)
	// Authorizations come by name (policymodel), from-web after from-lan.
	i := slices.IndexFunc(p.GetAuthorizations(), func(a *apiv1.Authorization) bool { return a.GetName() == "from-web" })
	if got := p.GetAuthorizations()[max(i, 0)].GetIdentities(); i < 0 || len(got) != 1 || got[0] != "spiffe://cluster.local/ns/demo/sa/other" {
		t.Fatalf("after the edit: %v", p)
	}
	// A bad edit is refused; the last good policy stays (nothing pushed),
	// and removing the policies brings the default back.
	e.writeAtomic(t, meshYAML+strings.Replace(policiesYAML, "port: 9101, protocol: HTTP/1", "port: http", 1))
	e.writeAtomic(t, meshYAML)
	if p := s.next(t); p.GetSource() != "default" {
		t.Fatalf("after removing the policies: %v", p)
	}
}

// translatedYAML uses what only internal/policymodel translated before
// local mode called it: serviceAccounts (SPIFFE IDs in the file's trust
// domain) and a GRPCRoute with its own policy.
const translatedYAML = `
policies:
  - apiVersion: policy.trellis.io/v1alpha1
    kind: Server
    metadata: {name: books-grpc, namespace: demo}
    spec: {podSelector: {}, port: 9101, protocol: gRPC}
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: from-web-sa, namespace: demo}
    spec:
      targetRef: {kind: Server, name: books-grpc}
      serviceAccounts: [{name: web}, {name: bot, namespace: ops}]
  - apiVersion: gateway.networking.k8s.io/v1
    kind: GRPCRoute
    metadata: {name: lookup, namespace: demo}
    spec:
      parentRefs: [{kind: Server, name: books-grpc}]
      rules: [{matches: [{method: {service: books.v1.Books, method: Lookup}}]}]
  - apiVersion: policy.trellis.io/v1alpha1
    kind: AuthorizationPolicy
    metadata: {name: lookup-ops, namespace: demo}
    spec:
      targetRef: {kind: GRPCRoute, name: lookup}
      namespaces: [ops]
`

func TestResolvePolicyServiceAccountsAndGRPCRoute(t *testing.T) {
	cfg, err := store.Parse([]byte("trustDomain: example.org\n" + meshYAML + translatedYAML))
	if err != nil {
		t.Fatal(err)
	}
	td := func(ns, sa string) string { return "spiffe://example.org/ns/" + ns + "/sa/" + sa }
	want := &apiv1.ServerPolicy{
		Name: "server/books-grpc", Source: "server", Protocol: apiv1.ProtocolHint_GRPC, Access: apiv1.AccessPolicy_DENY,
		Authorizations: []*apiv1.Authorization{{Name: "from-web-sa", Identities: []string{td("demo", "web"), td("ops", "bot")}}},
		Routes: []*apiv1.InboundRoute{{
			Name:           "demo/lookup",
			Matches:        []*apiv1.RouteMatch{{PathExact: "/books.v1.Books/Lookup"}},
			Authorizations: []*apiv1.Authorization{{Name: "lookup-ops", Namespaces: []string{"ops"}}},
		}},
	}
	got := resolvePolicy(cfg, td("demo", "books"), 9101)
	if !proto.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
	// The proxy's evaluator agrees: web is in, another identity only on
	// the route its namespace is allowed.
	p, err := authz.Compile(got, authz.Defaults{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id, path string
		allowed  bool
	}{
		{td("demo", "web"), "/books.v1.Books/List", true},
		{td("ops", "bot"), "/books.v1.Books/List", true},
		{td("demo", "loadgen"), "/books.v1.Books/List", false},
		{td("ops", "other"), "/books.v1.Books/Lookup", true},
		{td("ops", "other"), "/books.v1.Books/List", false},
	} {
		d := p.Decide(authz.Input{Identity: tt.id, TLS: true, Method: "POST", Path: tt.path})
		if d.Allowed != tt.allowed {
			t.Errorf("%s %s: %+v, want allowed=%v", tt.id, tt.path, d, tt.allowed)
		}
	}
}
