package epslice

import (
	"context"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func slice(name, ip string) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "ns", UID: "uid", Labels: map[string]string{discoveryv1.LabelManagedBy: "me"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP)}},
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}}},
	}
}

func TestPortsKeyAndName(t *testing.T) {
	a := []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}}
	b := []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(9090))}}
	if PortsKey(a) == PortsKey(b) || PortsKey(a) != PortsKey(slices.Clone(a)) {
		t.Errorf("keys %q %q", PortsKey(a), PortsKey(b))
	}
	// Pinned: a changed hash would replace every existing slice on upgrade.
	if n := Name("books", "k"); n != "books-1u1sj56" || n == Name("books", "l") {
		t.Errorf("name %q: want books- and the base-36 FNV-1a of the key", n)
	}
}

func TestDiffers(t *testing.T) {
	base := slice("a", "10.0.0.1")
	for _, tc := range []struct {
		name   string
		mutate func(*discoveryv1.EndpointSlice)
		want   bool
	}{
		{"same", func(*discoveryv1.EndpointSlice) {}, false},
		{"API-server fields", func(s *discoveryv1.EndpointSlice) { s.ResourceVersion, s.Generation = "7", 3 }, false},
		{"endpoint", func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Addresses[0] = "10.0.0.2" }, true},
		{"port", func(s *discoveryv1.EndpointSlice) { s.Ports[0].Port = new(int32(1)) }, true},
		{"label", func(s *discoveryv1.EndpointSlice) { s.Labels["x"] = "y" }, true},
		{"owner", func(s *discoveryv1.EndpointSlice) { s.OwnerReferences = []metav1.OwnerReference{{Name: "svc"}} }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base.DeepCopy()
			tc.mutate(s)
			if got := Differs(s, base); got != tc.want {
				t.Errorf("Differs = %v", got)
			}
		})
	}
}

// TestApply: only what differs is written; what is not wanted is deleted;
// a slice created by an earlier sync the cache has not seen is no error.
func TestApply(t *testing.T) {
	same, changed, gone, unseen := slice("same", "10.0.0.1"), slice("changed", "10.0.0.2"), slice("gone", "10.0.0.3"), slice("unseen", "10.0.0.4")
	client := fake.NewClientset(same, changed, gone, unseen)
	have := []*discoveryv1.EndpointSlice{same, changed, gone}
	want := []*discoveryv1.EndpointSlice{same.DeepCopy(), slice("changed", "10.0.0.9"), unseen.DeepCopy(), slice("new", "10.0.0.5")}
	client.ClearActions()
	w, err := Apply(context.Background(), client.DiscoveryV1().EndpointSlices("ns"), have, want, "test")
	if err != nil {
		t.Fatal(err)
	}
	if w != (Writes{Created: 1, Updated: 1, Deleted: 1}) {
		t.Errorf("writes %+v", w)
	}
	var verbs []string
	for _, a := range client.Actions() {
		verbs = append(verbs, a.GetVerb())
	}
	slices.Sort(verbs)
	if !slices.Equal(verbs, []string{"create", "create", "delete", "update"}) {
		t.Errorf("calls %v: want a create each for new and unseen, an update of changed, a delete of gone", verbs)
	}
	if _, err := client.DiscoveryV1().EndpointSlices("ns").Get(context.Background(), "gone", metav1.GetOptions{}); err == nil {
		t.Error("gone is still there")
	}
}
