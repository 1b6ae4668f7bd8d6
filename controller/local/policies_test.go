package local

import (
	"context"
	"crypto/tls"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
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
		Authorizations: []*apiv1.Authorization{
			{Name: "from-web", Identities: []string{"spiffe://cluster.local/ns/demo/sa/web"}},
			{Name: "from-lan", Identities: []string{"*"}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}},
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
	pol := apiv1.NewPolicyClient(e.dial(t, certified(t, e, booksID, tokenV2)))
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
	if got := p.GetAuthorizations()[0].GetIdentities(); len(got) != 1 || got[0] != "spiffe://cluster.local/ns/demo/sa/other" {
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

// certified is a certificate for id from the controller: only a workload's
// own mTLS identity may watch its policy.
func certified(t *testing.T, e *env, id identity.ID, token string) *tls.Certificate {
	t.Helper()
	csr, cert := csrFor(t, id)
	resp, err := apiv1.NewIdentityClient(e.dial(t, nil)).Certify(context.Background(), &apiv1.CertifyRequest{
		Identity: id.String(), Token: []byte(token), CertificateSigningRequest: csr,
	})
	if err != nil {
		t.Fatal(err)
	}
	cert.Certificate = resp.Chain
	return cert
}
