package external

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	workloadversioned "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	chart "github.com/trellis-mesh/trellis/charts/trellis"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) { apiservertest.Main(m) }

// TestAPIServer runs the controller against a real kube-apiserver with the
// chart's ExternalWorkload CRD: the Service legacy selects a certified and
// an uncertified workload (one slice, one endpoint ready); the slice
// follows an address change, a deleted workload and a hand deletion; a
// slice of another manager is never touched; the Service deleted, its
// slices go (here without a garbage collector: the controller deletes
// them itself).
func TestAPIServer(t *testing.T) {
	ns := fmt.Sprintf("external-test-%d", rand.Uint32()) // a fresh one on a reused server
	ctx, kc, wc := apiServerEnv(t, ns)
	must(t)(kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "legacy"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}},
	}, metav1.CreateOptions{}))
	foreign := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "legacy-by-hand", Labels: map[string]string{discoveryv1.LabelServiceName: "legacy", discoveryv1.LabelManagedBy: "someone-else"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.250.9.9"}}},
	}
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, foreign, metav1.CreateOptions{}))
	createEW(ctx, t, wc, ns, ew("a", true, []string{"10.250.0.1"}, "http=8080"))
	createEW(ctx, t, wc, ns, ew("b", false, []string{"10.250.0.2"}, "http=8080"))

	reg := prometheus.NewRegistry()
	c := runController(ctx, t, kc, wc, reg)
	waitSlices(ctx, t, kc, ns, "IPv4 http:8080 | 10.250.0.1 a ready, 10.250.0.2 b -")
	sls, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + ManagedBy})
	if err != nil || len(sls.Items) != 1 {
		t.Fatalf("slices: %v %v", sls, err)
	}
	svc, err := kc.CoreV1().Services(ns).Get(ctx, "legacy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o := sls.Items[0].OwnerReferences; len(o) != 1 || o[0].UID != svc.UID {
		t.Errorf("owner %+v, want the Service %s", o, svc.UID)
	}

	// The API server refuses what would re-point a certified workload:
	// its addresses and identity are immutable, and only unicast.
	a, err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Get(ctx, "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		change func(*workloadv1.ExternalWorkload)
		want   string
	}{
		{"move", func(w *workloadv1.ExternalWorkload) { w.Spec.Addresses[0].IP = "10.250.0.3" }, "addresses are immutable"},
		{"identity", func(w *workloadv1.ExternalWorkload) { w.Spec.ServiceAccount = "payments" }, "serviceAccount is immutable"},
	} {
		w := a.DeepCopy()
		tc.change(w)
		if _, err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Update(ctx, w, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, ip := range []string{"169.254.169.254", "127.0.0.1", "0.0.0.0", "224.0.0.1", "fe80::1"} {
		w := ew("bad", false, []string{ip}, "http=8080")
		w.Namespace, w.UID = "", ""
		if _, err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Create(ctx, w, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "unicast") {
			t.Errorf("address %s: %v, want a refusal", ip, err)
		}
	}
	two := ew("two", false, []string{"10.250.0.8", "10.250.0.9"}, "http=8080")
	two.Namespace, two.UID = "", ""
	if _, err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Create(ctx, two, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "one address per family") {
		t.Errorf("two IPv4 addresses: %v, want a refusal", err)
	}

	// b is certified: its endpoint becomes ready.
	b, err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Get(ctx, "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Status = ew("b", true, nil).Status
	b.Status.Conditions[0].LastTransitionTime = metav1.Now()
	must(t)(wc.WorkloadV1alpha1().ExternalWorkloads(ns).UpdateStatus(ctx, b, metav1.UpdateOptions{}))
	waitSlices(ctx, t, kc, ns, "IPv4 http:8080 | 10.250.0.1 a ready, 10.250.0.2 b ready")

	// b goes; then a hand deletion of our slice is put back.
	if err := wc.WorkloadV1alpha1().ExternalWorkloads(ns).Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSlices(ctx, t, kc, ns, "IPv4 http:8080 | 10.250.0.1 a ready")
	if err := kc.DiscoveryV1().EndpointSlices(ns).DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + ManagedBy}); err != nil {
		t.Fatal(err)
	}
	waitSlices(ctx, t, kc, ns, "IPv4 http:8080 | 10.250.0.1 a ready")
	if got := testutil.ToFloat64(c.metrics.gauge.WithLabelValues("true")); got != 1 {
		t.Errorf("ready endpoints: %v, want 1", got)
	}

	// The Service goes: so do our slices, and only ours.
	if err := kc.CoreV1().Services(ns).Delete(ctx, "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSlices(ctx, t, kc, ns, "")
	if _, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, foreign.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the slice of another manager: %v", err)
	}
	if got := testutil.ToFloat64(c.metrics.gauge.WithLabelValues("true")) + testutil.ToFloat64(c.metrics.gauge.WithLabelValues("false")); got != 0 {
		t.Errorf("endpoints after the Service went: %v", got)
	}
	// Only changes were written: no update a no-op sync repeats.
	var writes []float64
	for _, op := range []string{"create", "update", "delete"} {
		writes = append(writes, testutil.ToFloat64(c.metrics.writes.WithLabelValues(op)))
	}
	if !slices.Equal(writes, []float64{2, 2, 1}) {
		t.Errorf("writes (create, update, delete) %v, want [2 2 1]", writes)
	}
}

// apiServerEnv: the real API server with the ExternalWorkload CRD applied,
// the namespace ns, clients, and a context bounding the test.
func apiServerEnv(t *testing.T, ns string) (context.Context, kubernetes.Interface, workloadversioned.Interface) {
	t.Helper()
	cfg := apiservertest.RESTConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	crd, err := fs.ReadFile(chart.FS, "crds/workload.trellis.io_externalworkloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	apiservertest.ApplyCRDs(ctx, t, dynamic.NewForConfigOrDie(cfg), "external-test", crd)
	kc := kubernetes.NewForConfigOrDie(cfg)
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return ctx, kc, workloadversioned.NewForConfigOrDie(cfg)
}

// createEW creates w in the test namespace with its status (the status
// subresource: as the identity service writes it).
func createEW(ctx context.Context, t *testing.T, wc workloadversioned.Interface, ns string, w *workloadv1.ExternalWorkload) {
	t.Helper()
	api := wc.WorkloadV1alpha1().ExternalWorkloads(ns)
	in := w.DeepCopy()
	in.Namespace, in.UID = "", ""
	got, err := api.Create(ctx, in, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range w.Status.Conditions {
		w.Status.Conditions[i].LastTransitionTime = metav1.Now()
	}
	got.Status = w.Status
	must(t)(api.UpdateStatus(ctx, got, metav1.UpdateOptions{}))
}

// runController starts the shared cache and the controller until the
// test ends.
func runController(ctx context.Context, t *testing.T, kc kubernetes.Interface, wc workloadversioned.Interface, reg prometheus.Registerer) *Controller {
	t.Helper()
	ic, err := informers.New(kc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ic.WatchExternalWorkloads(wc); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Client: kc, Cache: ic, Registerer: reg, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	ic.Start(rctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(rctx, 2) }()
	t.Cleanup(func() { cancel(); <-done; ic.Shutdown() })
	if err := ic.WaitForSync(rctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// slicesState renders our slices of legacy (describe), sorted.
func slicesState(ctx context.Context, kc kubernetes.Interface, ns string) (string, error) {
	list, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=legacy," + discoveryv1.LabelManagedBy + "=" + ManagedBy})
	if err != nil {
		return "", err
	}
	var parts []string
	for i := range list.Items {
		parts = append(parts, describe([]*discoveryv1.EndpointSlice{&list.Items[i]}))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; "), nil
}

func waitSlices(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns, want string) {
	t.Helper()
	start := time.Now()
	var got string
	var err error
	for time.Since(start) < time.Minute {
		if got, err = slicesState(ctx, kc, ns); err == nil && got == want {
			t.Logf("slices %q after %s", got, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("slices %q (%v), want %q", got, err, want)
}

var must = apiservertest.Must
