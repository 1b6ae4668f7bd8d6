package install

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// TestAPIServer applies the CRDs and a default install with server-side
// apply to a real API server (TRELLIS_KUBECONFIG, e.g. from make
// cluster-up), checks the objects exist, that the API server accepts the
// controller's pod under the namespace's restricted Pod Security level and
// rejects bad policy objects with the CRDs' messages, then uninstalls and
// checks nothing Trellis made is left.
func TestAPIServer(t *testing.T) {
	path := os.Getenv("TRELLIS_KUBECONFIG")
	if path == "" {
		t.Skip("set TRELLIS_KUBECONFIG to a cluster's kubeconfig (make cluster-up prints it) to run against a real API server")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	if found, err := FindInstalled(ctx, dc); err != nil {
		t.Fatal(err)
	} else if len(found) > 0 {
		t.Fatalf("the cluster already holds Trellis objects (%s ...): run trellis uninstall --apply first", found[0].Ref())
	}
	t.Cleanup(func() { // leave nothing behind even when the test fails midway
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if found, err := FindInstalled(ctx, dc); err == nil {
			_ = Delete(ctx, dc, found)
		}
	})

	crds, err := RenderCRDs()
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, dc, crds); err != nil {
		t.Fatal(err)
	}
	for _, o := range crds.Objects {
		waitEstablished(ctx, t, dc, o.Name)
	}
	id, wh := testMaterial(t)
	m, err := Render(Options{HA: true, Version: "dev", Identity: id, Webhook: wh})
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply(ctx, dc, m); err != nil {
		t.Fatal(err)
	}
	// Apply is idempotent: a second apply of the same manifest succeeds.
	if err := Apply(ctx, dc, m); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	for _, o := range m.Objects {
		if _, err := dc.Resource(o.Kind.GVR()).Namespace(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err != nil {
			t.Errorf("%s not in the cluster: %v", o.Ref(), err)
		}
	}

	t.Run("controller pod passes restricted pod security", func(t *testing.T) {
		var d appsv1.Deployment
		for _, o := range m.Objects {
			if o.Kind.Kind == "Deployment" {
				if err := yaml.Unmarshal(o.YAML, &d); err != nil {
					t.Fatal(err)
				}
			}
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "trellis-controller-", Namespace: Namespace, Labels: d.Spec.Template.Labels},
			Spec: d.Spec.Template.Spec}
		if _, err := cs.CoreV1().Pods(Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatalf("the API server refuses the controller's pod: %v", err)
		}
	})

	t.Run("upgrade reads back the installed material", func(t *testing.T) {
		ex, err := ReadExisting(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		if string(ex.Identity.IssuerKeyPEM) != string(id.IssuerKeyPEM) || ex.Webhook == nil || string(ex.Webhook.CAPEM) != string(wh.CAPEM) {
			t.Fatal("material read from the cluster differs from what was applied")
		}
	})

	t.Run("policy validation", func(t *testing.T) {
		for _, tc := range policyCases {
			t.Run(tc.name, func(t *testing.T) {
				var u unstructured.Unstructured
				if err := yaml.Unmarshal([]byte(tc.yaml), &u.Object); err != nil {
					t.Fatal(err)
				}
				gvr := schema.GroupVersionResource{Group: "policy.trellis.io", Version: "v1alpha1", Resource: strings.ToLower(u.GetKind()) + "s"}
				if u.GetKind() == "AuthorizationPolicy" {
					gvr.Resource = "authorizationpolicies"
				}
				_, err := dc.Resource(gvr).Namespace("default").Create(ctx, &u, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if tc.wantErr == "" {
					if err != nil {
						t.Fatalf("valid object refused: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("invalid object accepted, want an error with %q", tc.wantErr)
				}
				if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want Invalid with %q", err, tc.wantErr)
				}
				t.Logf("rejected: %v", err)
			})
		}
	})

	found, err := FindInstalled(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != len(m.Objects)+len(crds.Objects) {
		t.Errorf("uninstall finds %d objects, install applied %d", len(found), len(m.Objects)+len(crds.Objects))
	}
	if err := Delete(ctx, dc, found); err != nil {
		t.Fatal(err)
	}
	// Namespaces and CRDs finish deleting asynchronously.
	for {
		left, err := FindInstalled(ctx, dc)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after uninstall, still present: %v", left)
		}
		time.Sleep(time.Second)
	}
}

func waitEstablished(ctx context.Context, t *testing.T, dc dynamic.Interface, name string) {
	t.Helper()
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	for {
		u, err := dc.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
		for _, c := range conds {
			cm, _ := c.(map[string]any)
			if cm["type"] == "Established" && cm["status"] == "True" {
				return
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("CRD %s not established", name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// policyCases are objects the API server must accept or refuse, and the
// message it must refuse them with.
var policyCases = []struct {
	name    string
	yaml    string
	wantErr string
}{
	{"server ok", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {matchLabels: {app: web}}, port: 8080, protocol: HTTP/1}}`, ""},
	{"server named port ok", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}, port: http}}`, ""},
	{"server port too big", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}, port: 70000}}`, "port must be a number between 1 and 65535"},
	{"server bad port name", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}, port: Not_A_Name}}`, "port name must be an IANA service name"},
	{"server bad protocol", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}, port: 80, protocol: HTTP/3}}`, "Unsupported value"},
	{"server without port", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}}}`, "spec.port: Required value"},
	{"server In without values", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {matchExpressions: [{key: app, operator: In}]}, port: 80}}`, "operators In and NotIn need values"},
	{"authz ok", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: ["spiffe://cluster.local/ns/a/sa/b"], networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}}`, ""},
	{"authz allows nobody", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}}}`, "the policy allows nobody"},
	{"authz any identity ok", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: ["*"]}}`, ""},
	{"authz identity with a space", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: ["spiffe://cluster.local/ns/a b/sa/c"]}}`, "each identity must be"},
	{"authz bad identity", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: [web]}}`, `each identity must be "*" or a SPIFFE ID such as spiffe://cluster.local/ns/NAMESPACE/sa/SERVICEACCOUNT`},
	{"authz bad cidr", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, networks: [{cidr: 10.0.0.0/33}]}}`, "cidr must be an IPv4 or IPv6 CIDR"},
	{"authz identity the proxy refuses", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: ["spiffe://cluster.local/ns/Shop/sa/web"]}}`, "identities: each entry must be"},
	{"authz identity with a path", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, identities: ["spiffe://cluster.local/ns/shop/sa/web/x"]}}`, "identities: each entry must be"},
	{"authz namespace target, serviceAccounts", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Namespace, name: default}, serviceAccounts: [{name: web}, {name: gw, namespace: edge}]}}`, ""},
	{"authz route target", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}, unauthenticated: true}}`, ""},
	{"authz route target without group", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: GRPCRoute, name: admin}, unauthenticated: true}}`, "targetRef: a Server has group policy.trellis.io"},
	{"authz server in the gateway group", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {group: gateway.networking.k8s.io, kind: Server, name: web}, unauthenticated: true}}`, "targetRef: a Server has group policy.trellis.io"},
	{"authz too many networks", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, networks: [` + strings.Repeat(`{cidr: 10.0.0.0/8},`, 17) + `]}}`, "must have at most 16 items"},
	{"server bad accessPolicy", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: web}, spec: {podSelector: {}, port: 80, accessPolicy: allow}}`, "Unsupported value"},
	{"authz wrong target kind", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Service, name: web}, unauthenticated: true}}`, "Unsupported value"},
	{"authz duplicate namespaces", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, namespaces: [a, a]}}`, "Duplicate value"},
	{"ratelimit ok", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, requestsPerSecond: 100, burst: 200, concurrency: 10}}`, ""},
	{"ratelimit zero rps", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, requestsPerSecond: 0}}`, "should be greater than or equal to 1"},
	{"ratelimit empty", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}}}`, "set requestsPerSecond, perClient, overrides, concurrency or adaptiveConcurrency"},
	{"ratelimit burst alone", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: web}, spec: {targetRef: {kind: Server, name: web}, concurrency: 5, burst: 10}}`, "burst needs requestsPerSecond"},
}
