package store

import (
	"net/netip"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// TestParseMarshalledFile checks the contract with the writers (trellis
// demo, the test harness): every field of meshconfig.File they marshal,
// empty ones included, is accepted by the strict parser and means what the
// writer set.
func TestParseMarshalledFile(t *testing.T) {
	f := meshconfig.File{
		TrustDomain:         "example.org",
		ClusterDomain:       "mesh.internal",
		CertificateLifetime: "2h",
		Services: []meshconfig.Service{
			{Name: "books", Namespace: "demo", Ports: []meshconfig.ServicePort{{Port: 80, Protocol: ProtocolHTTP}, {Port: 7000}}},
		},
		Workloads: []meshconfig.Workload{
			{
				Name: "books-v1", Namespace: "demo", ServiceAccount: "books", Token: "0123456789abcdef-v1",
				ProxyAddr: "127.0.0.1:4243", Zone: "zone-a", Labels: map[string]string{"version": "v1"},
				Endpoints: []meshconfig.Endpoint{
					{Service: "books", Port: 80, TargetPort: 9101, Weight: new(3)},
					{Service: "books", Port: 7000},
				},
			},
			// No endpoints, as nil (written as null) and as empty (written as []).
			{Name: "client", Namespace: "demo", ServiceAccount: "client", Token: "0123456789abcdef-c1", ProxyAddr: "127.0.0.1:4244"},
			{Name: "client2", Namespace: "demo", ServiceAccount: "client", Token: "0123456789abcdef-c2", ProxyAddr: "127.0.0.1:4245", Endpoints: []meshconfig.Endpoint{}},
		},
	}
	b, err := f.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(b)
	if err != nil {
		t.Fatalf("Parse(marshalled file): %v\n%s", err, b)
	}
	if c.TrustDomain != "example.org" || c.ClusterDomain != "mesh.internal" || c.CertificateLifetime != 2*time.Hour {
		t.Errorf("top level: %q %q %s", c.TrustDomain, c.ClusterDomain, c.CertificateLifetime)
	}
	s := c.Service("demo", "books")
	if s == nil || s.Ports[80] != ProtocolHTTP || s.Ports[7000] != ProtocolDetect {
		t.Fatalf("service: %+v", s)
	}
	if b := s.Backends[80]; len(b) != 1 || b[0].Weight != 3 || b[0].TargetPort != 9101 {
		t.Errorf("port 80 backends: %+v", b)
	}
	if b := s.Backends[7000]; len(b) != 1 || b[0].Weight != 1 || b[0].TargetPort != 0 {
		t.Errorf("port 7000 backends (defaults): %+v", b)
	}
	w := c.WorkloadAt(netip.MustParseAddrPort("127.0.0.1:4243"))
	if w == nil || w.Zone != "zone-a" || w.Labels["version"] != "v1" || w.Token != "0123456789abcdef-v1" {
		t.Errorf("workload: %+v", w)
	}
	for _, addr := range []string{"127.0.0.1:4244", "127.0.0.1:4245"} {
		if w := c.WorkloadAt(netip.MustParseAddrPort(addr)); w == nil || len(w.Endpoints) != 0 {
			t.Errorf("workload at %s: %+v", addr, w)
		}
	}
}
