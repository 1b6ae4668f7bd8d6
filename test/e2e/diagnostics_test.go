package e2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/test/harness"
)

// TestDiagnosticsLocal runs `trellis diagnostics` against a real local
// controller and real proxies: what Destination answers for a service
// (the proxy's address and the identity it must prove), a proxy's and the
// controller's metrics, and a port's inbound policy.
func TestDiagnosticsLocal(t *testing.T) {
	requireBinaries(t)
	books := startApp(t, "books")
	store := harness.Store{
		Services: []harness.Service{{Name: "books", Namespace: ns, Ports: []harness.ServicePort{{Port: 80}}}},
		Workloads: []harness.Workload{
			{Name: "web", Namespace: ns, ServiceAccount: "web"},
			{Name: "books", Namespace: ns, ServiceAccount: "books",
				Endpoints: []harness.Endpoint{{Service: "books", Port: 80, TargetPort: port(t, books.Addr)}}},
		},
	}
	m := harness.NewMesh(t, bins, &ports, store)
	m.StartController()
	bpx := m.StartReadyProxy(harness.ProxySpec{Workload: "books", AppAddr: books.Addr})
	// The store file tells the CLI where each proxy's admin port is.
	s := m.Store()
	s.Workload("books").AdminAddr = bpx.AdminAddr
	m.WriteStore(s)

	out, err := trellisCLI(t, "diagnostics", "endpoints", "books:80", "-n", ns, "--controller-admin", m.ControllerAdminAddr, "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var reps []struct {
		Answer struct {
			Exists    bool
			Endpoints []struct{ Address, Identity, Protocol string }
		}
	}
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(reps) != 1 || !reps[0].Answer.Exists || len(reps[0].Answer.Endpoints) != 1 {
		t.Fatalf("want one replica with one endpoint:\n%s", out)
	}
	if e := reps[0].Answer.Endpoints[0]; e.Address != bpx.InboundAddr || e.Identity != identityOf("books") {
		t.Errorf("endpoint %+v, want %s proving %s", e, bpx.InboundAddr, identityOf("books"))
	}
	out, err = trellisCLI(t, "diagnostics", "endpoints", "nothing:80", "-n", ns, "--controller-admin", m.ControllerAdminAddr)
	if err != nil || !strings.Contains(out, "names nothing the controller knows") {
		t.Errorf("unknown service: %v\n%s", err, out)
	}

	out, err = trellisCLI(t, "diagnostics", "proxy-metrics", "books", "-n", ns, "--config", m.StorePath, "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var pm struct {
		Families []struct {
			Name    string
			Samples []struct{ Value string }
		}
	}
	if err := json.Unmarshal([]byte(out), &pm); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	valid := ""
	for _, f := range pm.Families {
		if f.Name == "trellis_identity_cert_valid" && len(f.Samples) == 1 {
			valid = f.Samples[0].Value
		}
	}
	if valid != "1" {
		t.Errorf("books proxy's trellis_identity_cert_valid = %q, want 1", valid)
	}

	out, err = trellisCLI(t, "diagnostics", "controller-metrics", "--controller-admin", m.ControllerAdminAddr)
	if err != nil || !strings.Contains(out, "trellis_controller_certificates_issued_total 1") {
		t.Errorf("controller metrics (one certificate issued, to books): %v\n%s", err, out)
	}

	out, err = trellisCLI(t, "diagnostics", "policy", "books", strconv.Itoa(port(t, books.Addr)), "-n", ns, "--config", m.StorePath)
	if err != nil || !strings.Contains(out, "server: default") || !strings.Contains(out, "all-unauthenticated") {
		t.Errorf("policy of a port no Server selects: %v\n%s", err, out)
	}
}
