package serve

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"

	workloadfake "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/fake"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/k8s/external"
)

// TestServeExternalWorkloads: with the workload.trellis.io CRD served,
// the controller watches ExternalWorkloads, keeps the slices of a Service
// selecting one (here already what they should be: no write) and answers
// its endpoint with the workload's identity; without the CRD (an older
// install) it starts and serves, and the endpoint is left out.
func TestServeExternalWorkloads(t *testing.T) {
	legacy := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "legacy", Namespace: "shop", UID: "svc-uid"},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "legacy"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
	ew := &workloadv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "shop", UID: "ew-uid", Labels: map[string]string{"app": "legacy"}},
		Spec:       workloadv1.ExternalWorkloadSpec{ServiceAccount: "legacy", Addresses: []workloadv1.WorkloadAddress{{IP: "10.250.0.1"}}},
		Status:     workloadv1.ExternalWorkloadStatus{Conditions: []metav1.Condition{{Type: workloadv1.ConditionCertified, Status: metav1.ConditionTrue}}},
	}
	for _, tc := range []struct {
		name   string
		served bool
		want   string
		n      int
	}{
		{"CRD served", true, "spiffe://cluster.local/ns/shop/sa/legacy", 1},
		{"no CRD", false, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{legacy}
			for _, sl := range external.Desired(legacy, []*workloadv1.ExternalWorkload{ew}) {
				objs = append(objs, sl)
			}
			client := fake.NewClientset(objs...)
			if tc.served {
				client.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
					GroupVersion: workloadv1.SchemeGroupVersion.String(), APIResources: []metav1.APIResource{{Name: "externalworkloads"}},
				}}
			}
			ctx, cancel := context.WithCancel(context.Background())
			serverTLS, _ := mtls(t)
			c, err := Start(ctx, Config{
				Client: client, WorkloadClient: workloadfake.NewSimpleClientset(ew), TLS: serverTLS,
				Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer func() { cancel(); _ = c.Wait() }()
			a, err := authority.Parse("legacy.shop:80")
			if err != nil {
				t.Fatal(err)
			}
			r, _, release := c.Source.Resolve(a, "")
			release()
			if got := r.Endpoints.Addrs["10.250.0.1:80"].GetTlsIdentity().GetSpiffeId(); got != tc.want || len(r.Endpoints.Addrs) != tc.n {
				t.Errorf("endpoints %v, want the identity %q", r.Endpoints.Addrs, tc.want)
			}
			if !tc.served {
				return
			}
			// The slice controller runs (on this replica: no elector) and
			// finds the slices as they should be: one ready endpoint, no
			// write.
			const want = `
# HELP trellis_controller_external_workload_endpoints Endpoints in the ExternalWorkload EndpointSlices this replica maintains, by readiness (ready: the workload is certified).
# TYPE trellis_controller_external_workload_endpoints gauge
trellis_controller_external_workload_endpoints{ready="false"} 0
trellis_controller_external_workload_endpoints{ready="true"} 1
`
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				err := testutil.GatherAndCompare(c.Metrics.Registry, strings.NewReader(want), "trellis_controller_external_workload_endpoints")
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal(err)
				}
			}
			if n, err := testutil.GatherAndCount(c.Metrics.Registry, "trellis_controller_external_workload_slice_writes_total"); err != nil || n != 3 {
				t.Errorf("writes metrics: %d, %v", n, err)
			}
			for _, a := range client.Actions() {
				if a.GetResource().Resource == "endpointslices" && a.GetVerb() != "list" && a.GetVerb() != "watch" {
					t.Errorf("a write of slices that are as they should be: %s", a.GetVerb())
				}
			}
		})
	}
}
