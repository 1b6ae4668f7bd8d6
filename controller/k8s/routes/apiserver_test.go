package routes

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/status"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

// booksService names books.routes-test:8080 for every authority (the
// endpoints side is not under test).
type booksService struct{}

func (booksService) Resolve(authority.Authority, string) (destination.Resolution, <-chan struct{}, func()) {
	return destination.Resolution{Service: "books.routes-test.svc.cluster.local:8080"}, nil, func() {}
}

// TestAPIServer runs the routes side against a real kube-apiserver with
// the Gateway API's CRDs: an HTTPRoute created through the API reaches a
// GetRoutes stream over gRPC, and its Service parent's Accepted and
// ResolvedRefs are written, next to another controller's entry, once.
func TestAPIServer(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", apiservertest.Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(cfg)
	gc := gwversioned.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	apiservertest.ApplyCRDs(ctx, t, dynamic.NewForConfigOrDie(cfg), "routes-test",
		apiservertest.GatewayCRDs(ctx, t, "httproutes", "grpcroutes", "referencegrants")...)
	const ns = "routes-test"
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, name := range []string{"books", "books-v1", "books-v2"} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080}}}}
		if _, err := kc.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}

	kf := kinformers.NewSharedInformerFactory(kc, 0)
	rt, err := Setup(Config{Discovery: kc.Discovery(), Client: gc, Services: kf.Core().V1().Services().Informer(), Resync: time.Second})
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
	stream := openRoutes(ctx, t, rt.Source)
	if rc := recv(t, stream); len(rc.GetRoutes()) != 0 {
		t.Fatalf("before any route: %v", rc)
	}
	start := time.Now()
	hr := splitRoute(ns)
	if hr, err = gc.GatewayV1().HTTPRoutes(ns).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := recv(t, stream)
	if len(rc.GetRoutes()) != 1 || len(rc.GetRoutes()[0].GetBackends()) != 2 || rc.GetRoutes()[0].GetBackends()[1].GetWeight() != 10 {
		t.Fatalf("after the route: %v", rc)
	}
	t.Logf("the HTTPRoute reached the GetRoutes stream in %v", time.Since(start))
	// Another controller's entry, written before ours lands or after: kept.
	other := gwv1.RouteParentStatus{ParentRef: hr.Spec.ParentRefs[1], ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", LastTransitionTime: metav1.Now()}}}
	writeOther(ctx, t, gc, ns, hr.Name, other)
	got := waitParents(ctx, t, gc, ns, hr.Name)
	rv := got.ResourceVersion
	base, writes := rt.Status.Synced(), rt.Status.Writes()
	for rt.Status.Synced() < base+3 { // resyncs every second
		if ctx.Err() != nil {
			t.Fatal("resyncs did not reach the status writer")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if again, err := gc.GatewayV1().HTTPRoutes(ns).Get(ctx, hr.Name, metav1.GetOptions{}); err != nil || again.ResourceVersion != rv || rt.Status.Writes() != writes {
		t.Errorf("resyncs wrote again: resourceVersion %s -> %s, writes %d -> %d (%v)", rv, again.ResourceVersion, writes, rt.Status.Writes(), err)
	}
	customFilter(ctx, t, gc, stream, ns)
}

// customFilter creates a route whose first rule has an ExtensionRef (the
// CRD's validation takes it): the route is served, that rule with a
// backend of no authority (the proxy's 500), its other rule as written,
// and its status says ResolvedRefs False, InvalidKind, naming the filter.
func customFilter(ctx context.Context, t *testing.T, gc gwversioned.Interface, stream apiv1.Destination_GetRoutesClient, ns string) {
	t.Helper()
	hr := splitRoute(ns)
	hr.Name, hr.Spec.ParentRefs = "books-admin", hr.Spec.ParentRefs[:1]
	rest := hr.Spec.Rules[0]
	hr.Spec.Rules = []gwv1.HTTPRouteRule{{
		Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/admin")}}},
		Filters:     []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterExtensionRef, ExtensionRef: &gwv1.LocalObjectReference{Group: "example.com", Kind: "Auth", Name: "staff-only"}}},
		BackendRefs: rest.BackendRefs[:1],
	}, rest}
	if _, err := gc.GatewayV1().HTTPRoutes(ns).Create(ctx, hr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var admin []*apiv1.Route
	for len(admin) == 0 {
		for _, r := range recv(t, stream).GetRoutes() {
			if r.GetName() == ns+"/books-admin" {
				admin = append(admin, r)
			}
		}
	}
	if len(admin) != 2 || len(admin[0].GetBackends()) != 1 || admin[0].GetBackends()[0].GetAuthority() != "" || admin[1].GetBackends()[0].GetAuthority() == "" {
		t.Fatalf("the route with a custom filter: %v; want its first rule with one backend of no authority, its second as written", admin)
	}
	const want = `spec.rules[0].filters[0]: ExtensionRef example.com/Auth "staff-only": Trellis resolves no custom filter; the rule's requests are answered 500`
	for {
		got, err := gc.GatewayV1().HTTPRoutes(ns).Get(ctx, hr.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if ps := got.Status.Parents; len(ps) == 1 {
			a := meta.FindStatusCondition(ps[0].Conditions, "Accepted")
			r := meta.FindStatusCondition(ps[0].Conditions, "ResolvedRefs")
			if a == nil || a.Status != metav1.ConditionTrue || r == nil || r.Status != metav1.ConditionFalse || r.Reason != "InvalidKind" || r.Message != want {
				t.Fatalf("conditions %+v %+v: want Accepted, and ResolvedRefs False InvalidKind %q", a, r, want)
			}
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("no status written: %+v", got.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }

func splitRoute(ns string) *gwv1.HTTPRoute {
	port := gwv1.PortNumber(8080)
	backend := func(name string, weight int32) gwv1.HTTPBackendRef {
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: &weight,
			BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Port: &port}}}
	}
	kind, group := gwv1.Kind("Service"), gwv1.Group("")
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: "books-split", Namespace: ns},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{
				{Group: &group, Kind: &kind, Name: "books", Port: &port},
				{Name: "public-gateway"},
			}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{backend("books-v1", 90), backend("books-v2", 10)}}},
		},
	}
}

// writeOther adds another controller's parent entry, retrying conflicts
// with our writer.
func writeOther(ctx context.Context, t *testing.T, gc gwversioned.Interface, ns, name string, other gwv1.RouteParentStatus) {
	t.Helper()
	for {
		hr, err := gc.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		hr.Status.Parents = append(hr.Status.Parents, other)
		_, err = gc.GatewayV1().HTTPRoutes(ns).UpdateStatus(ctx, hr, metav1.UpdateOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsConflict(err) || ctx.Err() != nil {
			t.Fatal(err)
		}
	}
}

// waitParents waits for both entries: ours Accepted and ResolvedRefs,
// the other controller's untouched.
func waitParents(ctx context.Context, t *testing.T, gc gwversioned.Interface, ns, name string) *gwv1.HTTPRoute {
	t.Helper()
	for {
		hr, err := gc.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var ours, other *gwv1.RouteParentStatus
		for i, p := range hr.Status.Parents {
			switch p.ControllerName {
			case routemodel.ControllerName:
				ours = &hr.Status.Parents[i]
			case "example.com/gateway":
				other = &hr.Status.Parents[i]
			}
		}
		if ours != nil && other != nil {
			a := meta.FindStatusCondition(ours.Conditions, "Accepted")
			r := meta.FindStatusCondition(ours.Conditions, "ResolvedRefs")
			if a == nil || a.Status != metav1.ConditionTrue || r == nil || r.Status != metav1.ConditionTrue || a.ObservedGeneration != hr.Generation {
				t.Fatalf("our conditions %+v %+v", a, r)
			}
			if len(hr.Status.Parents) != 2 || string(ours.ParentRef.Name) != "books" {
				t.Fatalf("parents %+v: want the gateway's and ours for the Service", hr.Status.Parents)
			}
			return hr
		}
		if ctx.Err() != nil {
			t.Fatalf("parents %+v: ours or the other controller's missing", hr.Status.Parents)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openRoutes(ctx context.Context, t *testing.T, src *Source) apiv1.Destination_GetRoutesClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	apiv1.RegisterDestinationServer(srv, &destination.Service{Source: booksService{}, Routes: src, Metrics: metrics.New(), Log: slog.New(slog.DiscardHandler), Done: ctx.Done()})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	s, err := apiv1.NewDestinationClient(conn).GetRoutes(ctx, &apiv1.GetDestination{Path: "books.routes-test.svc.cluster.local:8080", CallerIdentity: "spiffe://cluster.local/ns/web/sa/web"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func recv(t *testing.T, s apiv1.Destination_GetRoutesClient) *apiv1.RouteConfig {
	t.Helper()
	rc, err := s.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return rc
}
