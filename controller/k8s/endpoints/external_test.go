package endpoints

import (
	"context"
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/destination"
)

// TestResolveExternal: of the external workloads controller's slice, only
// the certified workload at its own address is answered, with its
// identity and labels; every other endpoint is left out.
func TestResolveExternal(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/external.yaml")...)
	for _, path := range []string{"legacy.shop:80", "10.96.1.10:80"} {
		r := resolve(t, f.src, path, "")
		if got := addrs(r.Endpoints); got != "10.250.0.1:8080" {
			t.Fatalf("%s: %q, want only a's address", path, got)
		}
		wa := r.Endpoints.Addrs["10.250.0.1:8080"]
		if id := wa.GetTlsIdentity(); id.GetSpiffeId() != "spiffe://cluster.local/ns/shop/sa/legacy" ||
			id.GetServerName() != "legacy.shop.serviceaccount.identity.cluster.local" {
			t.Errorf("%s: identity %v", path, id)
		}
		want := map[string]string{"externalworkload": "a", "namespace": "shop", "serviceaccount": "legacy"}
		if !maps.Equal(wa.GetMetricLabels(), want) {
			t.Errorf("%s: labels %v, want %v", path, wa.GetMetricLabels(), want)
		}
		if h := wa.GetProtocolHint().GetProtocol().String(); h != "HTTP1" {
			t.Errorf("%s: hint %s", path, h)
		}
	}
}

// TestResolveExternalIP: an address no pod has is an ExternalWorkload's,
// answered with its identity once certified; unknown before (an
// uncertified claim, which anyone may write, changes nothing); known with
// no endpoint when two certified workloads claim it.
func TestResolveExternalIP(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/external.yaml")...)
	for _, tc := range []struct {
		path     string
		exists   bool
		identity string
		hint     string // from the Service whose slice lists the address
	}{
		{"10.250.0.1:8080", true, "spiffe://cluster.local/ns/shop/sa/legacy", "HTTP1"},
		{"10.250.0.3:9000", true, "spiffe://cluster.local/ns/other/sa/legacy", "UNKNOWN"},
		{"10.250.0.2:8080", false, "", ""}, // not certified
		{"10.250.0.20:8080", true, "", ""},
		{"10.250.0.5:8080", true, "", "HTTP1"}, // a pod's: plain text, as ever
		{"10.250.0.99:8080", false, "", ""},
	} {
		r := resolve(t, f.src, tc.path, "")
		wa := r.Endpoints.Addrs[tc.path]
		if r.Endpoints.Exists != tc.exists || wa.GetTlsIdentity().GetSpiffeId() != tc.identity {
			t.Errorf("%s: exists %v, endpoints %v; want %v, identity %q", tc.path, r.Endpoints.Exists, r.Endpoints.Addrs, tc.exists, tc.identity)
		}
		if wa != nil && wa.GetProtocolHint().GetProtocol().String() != tc.hint {
			t.Errorf("%s: hint %s, want %s", tc.path, wa.GetProtocolHint().GetProtocol(), tc.hint)
		}
	}
}

// TestResolveExternalWithoutCRD: the ExternalWorkloads not watched (no
// CRD), their endpoints are left out, never sent plain text.
func TestResolveExternalWithoutCRD(t *testing.T) {
	f := startWith(t, false, loadFixture(t, "testdata/external.yaml")...)
	if got := addrs(resolve(t, f.src, "legacy.shop:80", "").Endpoints); got != "" {
		t.Fatalf("%q, want none", got)
	}
}

// TestExternalUpdates: a workload's certification, service account and
// addresses change its service's answer, with no change of the slice:
// the workload's own events wake the watches.
func TestExternalUpdates(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/external.yaml")...)
	ctx := context.Background()
	api := f.workloads.WorkloadV1alpha1().ExternalWorkloads("shop")
	const legacy = "legacy.shop:80"
	update := func(name string, status bool, mutate func(*workloadv1.ExternalWorkload)) {
		t.Helper()
		w, err := api.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(w)
		if status {
			_, err = api.UpdateStatus(ctx, w, metav1.UpdateOptions{})
		} else {
			_, err = api.Update(ctx, w, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	has := func(want string) func(destination.Resolution) bool {
		return func(r destination.Resolution) bool { return addrs(r.Endpoints) == want }
	}

	update("b", true, func(w *workloadv1.ExternalWorkload) { w.Status.Conditions[0].Status = metav1.ConditionTrue })
	waitFor(t, f.src, legacy, "b certified", has("10.250.0.1:8080,10.250.0.2:8080"))

	update("a", false, func(w *workloadv1.ExternalWorkload) { w.Spec.ServiceAccount = "batch" })
	waitFor(t, f.src, legacy, "a's service account changed", func(r destination.Resolution) bool {
		return r.Endpoints.Addrs["10.250.0.1:8080"].GetTlsIdentity().GetSpiffeId() == "spiffe://cluster.local/ns/shop/sa/batch"
	})

	// a no longer lists the slice's address (the slice is behind): left out.
	update("a", false, func(w *workloadv1.ExternalWorkload) { w.Spec.Addresses[0].IP = "10.250.0.8" })
	waitFor(t, f.src, legacy, "a moved", has("10.250.0.2:8080"))
	waitFor(t, f.src, "10.250.0.8:8080", "a moved (its new address)", has("10.250.0.8:8080"))

	if err := api.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, legacy, "b deleted", has(""))
	if f.src.Watched() != 0 {
		t.Errorf("%d topics still watched after every release", f.src.Watched())
	}
}

func TestExternalWorkloadChanged(t *testing.T) {
	base := &workloadv1.ExternalWorkload{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
		Spec:       workloadv1.ExternalWorkloadSpec{ServiceAccount: "a", Addresses: []workloadv1.WorkloadAddress{{IP: "10.0.0.1"}}},
		Status:     workloadv1.ExternalWorkloadStatus{Conditions: []metav1.Condition{{Type: workloadv1.ConditionCertified, Status: metav1.ConditionTrue}}},
	}
	for _, tt := range []struct {
		name   string
		mutate func(*workloadv1.ExternalWorkload)
		want   bool
	}{
		{"a renewal's expiry", func(w *workloadv1.ExternalWorkload) { w.Status.CertificateExpiry = &metav1.Time{} }, false},
		{"labels (its slices change)", func(w *workloadv1.ExternalWorkload) { w.Labels = nil }, false},
		{"address", func(w *workloadv1.ExternalWorkload) { w.Spec.Addresses[0].IP = "10.0.0.2" }, true},
		{"second address", func(w *workloadv1.ExternalWorkload) {
			w.Spec.Addresses = append(w.Spec.Addresses, workloadv1.WorkloadAddress{IP: "fd00::1"})
		}, true},
		{"service account", func(w *workloadv1.ExternalWorkload) { w.Spec.ServiceAccount = "b" }, true},
		{"certification", func(w *workloadv1.ExternalWorkload) { w.Status.Conditions[0].Status = metav1.ConditionFalse }, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := base.DeepCopy()
			tt.mutate(w)
			if got := externalWorkloadChanged(base, w); got != tt.want {
				t.Fatalf("externalWorkloadChanged = %v, want %v", got, tt.want)
			}
		})
	}
}
