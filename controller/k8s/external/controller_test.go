package external

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	workloadfake "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/fake"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/k8s/informers/informerstest"
)

// TestController runs the controller over fake clientsets (the real API
// server's test, TestAPIServer, needs a Kubernetes build): slices follow
// a workload's certification and labels, writes happen only on a change,
// and the Service's deletion removes ours and leaves another manager's.
func TestController(t *testing.T) {
	s := svc(nil, named("http", 80, "http"))
	foreign := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "legacy-abc", Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: "legacy", discoveryv1.LabelManagedBy: "endpointslice-controller.k8s.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	kc, wc := fake.NewClientset(s, foreign), workloadfake.NewSimpleClientset(ew("a", false, []string{"10.0.0.1"}, "http=8080"))
	c := runFake(t, kc, wc)
	ctx := context.Background()
	state := func() string {
		list, err := kc.DiscoveryV1().EndpointSlices("shop").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelManagedBy + "=" + ManagedBy})
		if err != nil {
			t.Fatal(err)
		}
		var sls []*discoveryv1.EndpointSlice
		for i := range list.Items {
			sls = append(sls, &list.Items[i])
		}
		return describe(sls)
	}
	wait := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); state() != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("slices %q, want %q", state(), want)
			}
		}
	}
	wait("IPv4 http:8080 | 10.0.0.1 a -")

	certified := ew("a", true, []string{"10.0.0.1"}, "http=8080")
	if _, err := wc.WorkloadV1alpha1().ExternalWorkloads("shop").UpdateStatus(ctx, certified, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("IPv4 http:8080 | 10.0.0.1 a ready")
	writes := testutil.ToFloat64(c.metrics.writes.WithLabelValues("create")) + testutil.ToFloat64(c.metrics.writes.WithLabelValues("update"))
	if writes != 2 {
		t.Errorf("%v writes, want 2 (a create, an update)", writes)
	}

	// Its labels change: no Service selects it, the slice goes.
	certified.Labels = map[string]string{"app": "other"}
	if _, err := wc.WorkloadV1alpha1().ExternalWorkloads("shop").Update(ctx, certified, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("")
	certified.Labels = map[string]string{"app": "legacy"}
	if _, err := wc.WorkloadV1alpha1().ExternalWorkloads("shop").Update(ctx, certified, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("IPv4 http:8080 | 10.0.0.1 a ready")

	if err := kc.CoreV1().Services("shop").Delete(ctx, "legacy", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("")
	if _, err := kc.DiscoveryV1().EndpointSlices("shop").Get(ctx, foreign.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the EndpointSlice controller's slice: %v", err)
	}
}

// runFake runs the cache and the controller over fake clientsets until
// the test ends, once every informer watches.
func runFake(t *testing.T, kc *fake.Clientset, wc *workloadfake.Clientset) *Controller {
	t.Helper()
	waitWatches := informerstest.CountWatches(t, kc, wc)
	ic, err := informers.New(kc, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := ic.WatchExternalWorkloads(wc); err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Client: kc, Cache: ic, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ic.Start(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx, 2) }()
	t.Cleanup(func() { cancel(); <-done; ic.Shutdown() })
	waitWatches(5) // services, slices, pods, nodes, external workloads
	return c
}
