package policycmd

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kubefake "k8s.io/client-go/kubernetes/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	"sigs.k8s.io/yaml"

	policyfake "github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned/fake"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
)

// A namespace defaulting to deny; books serves 8080 (named http, selected by
// a Server by that name, with an HTTPRoute /admin for ops) and 8081 (no
// Server; the kubelet probes /ready there).
const (
	kubeNamespace = `{metadata: {name: shop, annotations: {config.trellis.io/default-inbound-policy: deny}}}`
	kubePod       = `
metadata: {name: books-0, namespace: shop, labels: {app: books}}
spec:
  serviceAccountName: books
  containers:
    - name: app
      ports: [{name: http, containerPort: 8080}, {name: health, containerPort: 8081}]
      readinessProbe: {httpGet: {path: /ready, port: health}}
status: {phase: Running}`
	kubeServer = `
metadata: {name: books, namespace: shop}
spec: {podSelector: {matchLabels: {app: books}}, port: http, protocol: HTTP/1}`
	kubeAuthz = `
metadata: {name: from-web, namespace: shop}
spec: {targetRef: {group: policy.trellis.io, kind: Server, name: books}, serviceAccounts: [{name: web}]}`
	kubeRoute = `
metadata: {name: admin, namespace: shop}
spec:
  parentRefs: [{group: policy.trellis.io, kind: Server, name: books}]
  rules: [{matches: [{path: {type: PathPrefix, value: /admin}}]}]`
	kubeRouteAuthz = `
metadata: {name: admin-ops, namespace: shop}
spec: {targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}, namespaces: [ops]}`
)

func decode[T any](t *testing.T, s string) *T {
	t.Helper()
	v := new(T)
	if err := yaml.UnmarshalStrict([]byte(s), v); err != nil {
		t.Fatal(err)
	}
	return v
}

// explain on Kubernetes translates the cluster's objects with
// internal/policymodel: named Server ports, serviceAccounts, HTTPRoutes,
// the probes route of the default, and the namespace's default.
func TestExplainKube(t *testing.T) {
	c := kubeClients{
		kube: kubefake.NewClientset(decode[corev1.Namespace](t, kubeNamespace), decode[corev1.Pod](t, kubePod)),
		policy: policyfake.NewSimpleClientset([]runtime.Object{decode[policyv1.Server](t, kubeServer),
			decode[policyv1.AuthorizationPolicy](t, kubeAuthz), decode[policyv1.AuthorizationPolicy](t, kubeRouteAuthz)}...),
		gateway: gwfake.NewClientset(decode[gwv1.HTTPRoute](t, kubeRoute)),
	}
	pods := []Pod{{Name: "books-0", Namespace: "shop", ServiceAccount: "books"}}
	tests := []struct {
		from, method, path string
		port               uint32
		decision, server   string
		route, by          string
	}{
		{"shop/web", "", "", 8080, "allowed", "server/books", "", "from-web"},
		{"shop/loadgen", "GET", "/books", 8080, "denied", "server/books", "", ""},
		{"ops/x", "GET", "/admin/stats", 8080, "allowed", "server/books", "shop/admin", "admin-ops"},
		{"ops/x", "GET", "/books", 8080, "denied", "server/books", "", ""},
		// No Server: the namespace's default (deny), but the probe gets in.
		{Unauthenticated, "GET", "/ready", 8081, "allowed", "default:deny", "probes", "probes"},
		{Unauthenticated, "GET", "/other", 8081, "denied", "default:deny", "", ""},
	}
	for _, tt := range tests {
		o := explainOpts{common: common{namespace: "shop"}, port: tt.port, trustDomain: "cluster.local"}
		sp, def, err := o.kubeAnswer(t.Context(), c, pods)
		if err != nil {
			t.Fatal(err)
		}
		if def != "deny" {
			t.Errorf("default %q, want the namespace's deny", def)
		}
		in, err := ParseFrom(tt.from, "cluster.local")
		if err != nil {
			t.Fatal(err)
		}
		in.Method, in.Path, in.Conn = tt.method, tt.path, tt.method == ""
		e, err := Explain(sp, in, authz.Defaults{Access: mustAccess(t, def), TrustDomain: "cluster.local"})
		if err != nil {
			t.Fatal(err)
		}
		if e.Decision != tt.decision || e.Server != tt.server || e.Route != tt.route || e.Authz != tt.by {
			t.Errorf("%s %s %s :%d: %+v, want %s by %s/%s/%q", tt.from, tt.method, tt.path, tt.port, e, tt.decision, tt.server, tt.route, tt.by)
		}
	}
	// The flag wins over the annotations.
	o := explainOpts{common: common{namespace: "shop"}, port: 8081, def: "audit"}
	if _, def, err := o.kubeAnswer(t.Context(), c, pods); err != nil || def != "audit" {
		t.Errorf("with --default-inbound-policy audit: %q, %v", def, err)
	}
}

func mustAccess(t *testing.T, v string) apiv1.AccessPolicy {
	t.Helper()
	a, err := authz.ParseAccess(v)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
