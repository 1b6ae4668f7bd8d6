package demo

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func testPorts(n int) []int {
	ports := make([]int, n)
	for i := range ports {
		ports[i] = 20000 + i
	}
	return ports
}

func TestStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	plan, err := NewPlan(dir, testPorts(PortsNeeded()), map[string]float64{"books": 0.3})
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.Write(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(plan.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}

	var back Store
	if err := yaml.UnmarshalStrict(b, &back); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(back, plan.Store()) {
		t.Errorf("round trip changed the store:\n got %+v\nwant %+v", back, plan.Store())
	}
	if err := back.Validate(); err != nil {
		t.Errorf("generated store is invalid: %v", err)
	}

	// The keys are those of docs/local-mode.md, checked without our own
	// struct tags.
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc["trustDomain"] != "cluster.local" {
		t.Errorf("trustDomain = %v", doc["trustDomain"])
	}
	services := map[string]string{}
	for _, s := range doc["services"].([]any) {
		m := s.(map[string]any)
		port := m["ports"].([]any)[0].(map[string]any)
		services[fmt.Sprintf("%s.%s:%v", m["name"], m["namespace"], port["port"])] = port["protocol"].(string)
	}
	wantServices := map[string]string{"web.demo:80": "http", "books.demo:80": "http", "authors.demo:80": "grpc"}
	if !reflect.DeepEqual(services, wantServices) {
		t.Errorf("services = %v, want %v", services, wantServices)
	}

	type wl struct{ sa, svc string }
	workloads := map[string]wl{}
	tokens := map[string]bool{}
	for _, w := range doc["workloads"].([]any) {
		m := w.(map[string]any)
		name := m["name"].(string)
		tok := m["token"].(string)
		if len(tok) != 32 || strings.Trim(tok, "0123456789abcdef") != "" || tokens[tok] {
			t.Errorf("%s: token %q is not a fresh 32-hex token", name, tok)
		}
		tokens[tok] = true
		if _, _, err := net.SplitHostPort(m["proxyAddr"].(string)); err != nil || !strings.HasPrefix(m["proxyAddr"].(string), "127.0.0.1:") {
			t.Errorf("%s: proxyAddr %v is not a loopback ip:port", name, m["proxyAddr"])
		}
		var svc string
		for _, e := range m["endpoints"].([]any) {
			ep := e.(map[string]any)
			svc = ep["service"].(string)
			if ep["port"] != float64(80) || ep["weight"] != float64(1) || ep["targetPort"] == nil {
				t.Errorf("%s: endpoint %v", name, ep)
			}
		}
		workloads[name] = wl{m["serviceAccount"].(string), svc}
	}
	wantWorkloads := map[string]wl{
		"loadgen": {"loadgen", ""}, "web": {"web", "web"},
		"books-v1": {"books", "books"}, "books-v2": {"books", "books"},
		"authors": {"authors", "authors"},
	}
	if !reflect.DeepEqual(workloads, wantWorkloads) {
		t.Errorf("workloads = %v, want %v", workloads, wantWorkloads)
	}

	// The targetPort of each workload is its app port, and each proxy
	// listens on its own ports.
	seen := map[int]string{}
	for _, w := range plan.Workloads {
		for _, p := range []int{w.AppPort, w.InboundPort, w.OutboundPort, w.AdminPort} {
			if other, dup := seen[p]; dup {
				t.Errorf("port %d used by %s and %s", p, other, w.Name)
			}
			seen[p] = w.Name
		}
		want := 0.0
		if w.Service == "books" {
			want = 0.3
		}
		if w.FailRate != want {
			t.Errorf("%s fail rate %v, want %v", w.Name, w.FailRate, want)
		}
	}

	// Secrets are private to the user.
	for _, p := range []string{plan.ConfigPath(), plan.TokenPath(plan.Workloads[0])} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), st.Mode().Perm())
		}
	}
	tok, err := os.ReadFile(plan.TokenPath(plan.Workloads[1]))
	if err != nil || string(tok) != plan.Workloads[1].Token {
		t.Errorf("token file = %q, %v; want %q", tok, err, plan.Workloads[1].Token)
	}
	if st, err := os.Stat(plan.StateDir()); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("state dir: %v %v, want mode 0700", st, err)
	}
}

func TestValidateRejects(t *testing.T) {
	good := func() Store {
		p, err := NewPlan("/x", testPorts(PortsNeeded()), nil)
		if err != nil {
			t.Fatal(err)
		}
		return p.Store()
	}
	tests := []struct {
		name   string
		mutate func(*Store)
		want   string
	}{
		{"short token", func(s *Store) { s.Workloads[0].Token = "abc" }, "workloads[0].token"},
		{"same token", func(s *Store) { s.Workloads[1].Token = s.Workloads[0].Token }, "workloads[1].token"},
		{"bad proxyAddr", func(s *Store) { s.Workloads[2].ProxyAddr = "localhost:80" }, "workloads[2].proxyAddr"},
		{"unknown service", func(s *Store) { s.Workloads[1].Endpoints[0].Service = "nope" }, "workloads[1].endpoints[0]"},
		{"bad name", func(s *Store) { s.Services[0].Name = "Web_1" }, "services[0]"},
		{"duplicate workload", func(s *Store) { s.Workloads[2].Name = s.Workloads[3].Name }, "duplicate"},
		{"port range", func(s *Store) { s.Services[1].Ports[0].Port = 70000 }, "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.mutate(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestNewPlanErrors(t *testing.T) {
	if _, err := NewPlan("/x", testPorts(3), nil); err == nil {
		t.Error("too few ports accepted")
	}
	if _, err := NewPlan("/x", testPorts(PortsNeeded()), map[string]float64{"db": 0.1}); err == nil || !strings.Contains(err.Error(), `"db"`) {
		t.Errorf("unknown --fail service: %v", err)
	}
}

func TestAllocatePorts(t *testing.T) {
	ports, err := AllocatePorts(PortsNeeded(), 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p <= 0 || seen[p] {
			t.Errorf("bad or duplicate port %d in %v", p, ports)
		}
		seen[p] = true
	}

	// A requested range with a busy port fails and names it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	_, err = AllocatePorts(1, busy)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d is in use", busy)) {
		t.Errorf("busy base port: %v", err)
	}
	if _, err := AllocatePorts(10, 65530); err == nil {
		t.Error("range past 65535 accepted")
	}
}
