package policy

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	chart "github.com/trellis-mesh/trellis/charts/trellis"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/policy/policytest"
	"github.com/trellis-mesh/trellis/controller/status"
)

// applyCRDs applies the chart's policy.trellis.io CRDs and the Gateway API's
// HTTPRoute and GRPCRoute CRDs (from the pinned module) and waits until
// the API server serves them.
// crdClient returns a dynamic client of the test kube-apiserver with the
// chart's CRDs applied, and a context bounding the test (2 minutes).
func crdClient(t *testing.T) (context.Context, dynamic.Interface) {
	t.Helper()
	cfg := apiservertest.RESTConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dc := dynamic.NewForConfigOrDie(cfg)
	applyCRDs(ctx, t, dc)
	return ctx, dc
}

func applyCRDs(ctx context.Context, t *testing.T, dc dynamic.Interface) {
	t.Helper()
	names, err := fs.Glob(chart.FS, "crds/policy.trellis.io_*.yaml")
	if err != nil || len(names) != 3 {
		t.Fatalf("chart CRDs %v: %v", names, err)
	}
	var docs [][]byte
	for _, n := range names {
		data, _ := fs.ReadFile(chart.FS, n)
		docs = append(docs, data)
	}
	docs = append(docs, apiservertest.GatewayCRDs(ctx, t, "httproutes", "grpcroutes")...)
	apiservertest.ApplyCRDs(ctx, t, dc, "policy-test", docs...)
}

// TestAPIServer runs the policy side against a real kube-apiserver with
// the generated CRDs: the WatchInbound answer follows a Server and an
// AuthorizationPolicy created through the API, and the policy's Accepted
// condition is written once, resyncs notwithstanding.
func TestAPIServer(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", apiservertest.Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(cfg)
	pc := versioned.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	applyCRDs(ctx, t, dynamic.NewForConfigOrDie(cfg))

	ns := "policy-test"
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}}
	if _, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: ns, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{ServiceAccountName: "web", AutomountServiceAccountToken: new(false), Containers: []corev1.Container{{
			Name: "app", Image: "example.invalid/web", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	if _, err := kc.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	kf := kinformers.NewSharedInformerFactory(kc, 0)
	gc := gwversioned.NewForConfigOrDie(cfg)
	rt, err := Setup(Config{Discovery: kc.Discovery(), Client: pc, Gateway: gc, Pods: kf.Core().V1().Pods().Informer(), Resync: time.Second, TrustDomain: "cluster.local"})
	if err != nil || rt == nil {
		t.Fatalf("Setup: %v, %v (the CRDs are applied)", rt, err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer func() { stop(); kf.Shutdown(); rt.Shutdown() }()
	kf.Start(rctx.Done())
	rt.Start(rctx, status.Always{})
	if !cache.WaitForCacheSync(ctx.Done(), rt.HasSynced) {
		t.Fatal("not synced")
	}

	web := "spiffe://cluster.local/ns/" + ns + "/sa/web"
	s := &stream{Ctx: policytest.CallerContext(t, rctx, web), Out: make(chan *apiv1.ServerPolicy, 8)}
	go func() {
		svc := &policy.Service{Source: rt.Source, Metrics: metrics.New()}
		_ = svc.WatchInbound(&apiv1.InboundPolicyRequest{Workload: web, Port: 8080, Pod: "web-1"}, s)
	}()
	start := time.Now()
	if p := next(t, s); p.GetName() != "default" {
		t.Fatalf("before any Server: %v", p)
	}
	srv := &policyv1.Server{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec:       policyv1.ServerSpec{PodSelector: policyv1.PodSelector{MatchLabels: map[string]policyv1.LabelValue{"app": "web"}}, Port: intstr.FromString("http"), Protocol: policyv1.ProtocolHTTP1},
	}
	if _, err := pc.PolicyV1alpha1().Servers(ns).Create(ctx, srv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := next(t, s); p.GetName() != "server/web" || p.GetProtocol() != apiv1.ProtocolHint_HTTP1 || len(p.GetAuthorizations()) != 0 {
		t.Fatalf("after the Server: %v", p)
	}
	ap := &policyv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "from-gateway", Namespace: ns},
		Spec: policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Server", Name: "web"},
			Identities: []policyv1.Identity{"spiffe://cluster.local/ns/edge/sa/gateway"}},
	}
	if _, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Create(ctx, ap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := next(t, s)
	if len(p.GetAuthorizations()) != 1 || p.GetAuthorizations()[0].GetIdentities()[0] != "spiffe://cluster.local/ns/edge/sa/gateway" {
		t.Fatalf("after the AuthorizationPolicy: %v", p)
	}
	t.Logf("WatchInbound followed both creations in %v", time.Since(start))

	// The policy's condition: written once, then resyncs (every second, the least client-go allows)
	// and the write's own event change nothing.
	var rv string
	for {
		got, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Get(ctx, ap.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Status.Conditions) == 2 {
			if c := got.Status.Conditions[0]; c.Type != policyv1.ConditionAccepted || c.Status != metav1.ConditionTrue || c.ObservedGeneration != got.Generation {
				t.Fatalf("condition %+v", c)
			}
			rv = got.ResourceVersion
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no Accepted condition written")
		}
		time.Sleep(100 * time.Millisecond)
	}
	base := rt.Status.Synced()
	for rt.Status.Synced() < base+6 { // both objects, three resyncs over
		if ctx.Err() != nil {
			t.Fatal("resyncs did not reach the status writer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Get(ctx, ap.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != rv || rt.Status.Writes() != 2 {
		t.Errorf("resourceVersion %s -> %s, %d status writes (want 2: the Server and the policy)", rv, got.ResourceVersion, rt.Status.Writes())
	}

	// A policy naming no Server: Accepted False, the culprit named.
	bad := ap.DeepCopy()
	bad.Name, bad.Spec.TargetRef.Name = "to-nowhere", "nowhere"
	if _, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Get(ctx, bad.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Status.Conditions) == 2 {
			if c := got.Status.Conditions[0]; c.Status != metav1.ConditionFalse || c.Reason != policyv1.ReasonTargetNotFound {
				t.Errorf("condition %+v, want False/TargetNotFound", c)
			} else {
				t.Logf("refused: %s", c.Message)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("no condition on the broken policy")
		}
		time.Sleep(100 * time.Millisecond)
	}
	richPolicy(ctx, t, pc, gc, s, ns)
	crdValidation(ctx, t, pc, ns)
}

// richPolicy: service accounts, namespaces, networks with exceptions and a
// route's own policy reach the stream; the route policy's conditions say
// its target resolves.
func richPolicy(ctx context.Context, t *testing.T, pc versioned.Interface, gc gwversioned.Interface, s *stream, ns string) {
	t.Helper()
	start := time.Now()
	wide := &policyv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "wide", Namespace: ns},
		Spec: policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Namespace", Name: ns},
			ServiceAccounts: []policyv1.ServiceAccountRef{{Name: "gw", Namespace: "edge"}}, Namespaces: []string{"ops"},
			Networks: []policyv1.Network{{CIDR: "10.0.0.0/8", Except: []policyv1.ExceptCIDR{"10.1.0.0/16"}}}},
	}
	if _, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Create(ctx, wide, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := `authorizations:{name:"wide" identities:"spiffe://cluster.local/ns/edge/sa/gw" namespaces:"ops" nets:{cidr:"10.0.0.0/8" except:"10.1.0.0/16"}}`
	waitFor(t, s, "the namespace-wide policy", func(p *apiv1.ServerPolicy) bool {
		return len(p.GetAuthorizations()) == 2 && strings.Contains(compact(p), squeeze(want))
	})
	route := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Group: new(gwv1.Group(policyv1.GroupName)), Kind: new(gwv1.Kind("Server")), Name: "web"}}},
			Rules: []gwv1.HTTPRouteRule{{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: new(gwv1.PathMatchPathPrefix), Value: new("/admin")}}}}},
		},
	}
	if _, err := gc.GatewayV1().HTTPRoutes(ns).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	admin := &policyv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "admin-only", Namespace: ns},
		Spec: policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Group: policyv1.GatewayGroup, Kind: "HTTPRoute", Name: "admin"},
			Identities: []policyv1.Identity{"spiffe://cluster.local/ns/ops/sa/admin"}},
	}
	if _, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Create(ctx, admin, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantRoute := `routes:{name:"` + ns + `/admin" matches:{path_prefix:"/admin"} authorizations:{name:"admin-only" identities:"spiffe://cluster.local/ns/ops/sa/admin"}}`
	waitFor(t, s, "the route and its policy", func(p *apiv1.ServerPolicy) bool { return strings.Contains(compact(p), squeeze(wantRoute)) })
	t.Logf("namespace-wide policy, route and route policy reached the stream in %v", time.Since(start))
	for {
		got, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Get(ctx, admin.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		a := meta.FindStatusCondition(got.Status.Conditions, policyv1.ConditionAccepted)
		r := meta.FindStatusCondition(got.Status.Conditions, policyv1.ConditionResolvedRefs)
		if a != nil && r != nil {
			if a.Status != metav1.ConditionTrue || r.Status != metav1.ConditionTrue || strings.Contains(a.Message, "in use") {
				t.Errorf("route policy conditions %+v %+v", a, r)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatal("no conditions on the route policy")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFor reads answers until ok accepts one.
func waitFor(t *testing.T, s *stream, what string, ok func(*apiv1.ServerPolicy) bool) {
	t.Helper()
	for {
		p := next(t, s)
		if ok(p) {
			return
		}
		t.Logf("waiting for %s; got %s", what, compact(p))
	}
}

func compact(p *apiv1.ServerPolicy) string { return squeeze(prototext.MarshalOptions{}.Format(p)) }

// squeeze drops white space (prototext's spacing is not stable).
func squeeze(s string) string { return strings.Join(strings.Fields(s), "") }

// crdValidation: the API server refuses what the proxy would refuse, with
// the CRD's message.
func crdValidation(ctx context.Context, t *testing.T, pc versioned.Interface, ns string) {
	t.Helper()
	for _, tc := range []struct {
		name string
		spec policyv1.AuthorizationPolicySpec
		want string
	}{
		{"identity in upper case", policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Server", Name: "web"},
			Identities: []policyv1.Identity{"spiffe://cluster.local/ns/Shop/sa/web"}}, "identities: each entry must be"},
		{"route without its group", policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "HTTPRoute", Name: "admin"},
			Unauthenticated: true}, "targetRef: a Server has group policy.trellis.io"},
		{"nobody", policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Server", Name: "web"}}, "the policy allows nobody"},
	} {
		ap := &policyv1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "invalid", Namespace: ns}, Spec: tc.spec}
		_, err := pc.PolicyV1alpha1().AuthorizationPolicies(ns).Create(ctx, ap, metav1.CreateOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want a refusal saying %q", tc.name, err, tc.want)
		}
	}
}
