package demo

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPlanWithPolicy(t *testing.T) {
	p, err := NewPlan("/x", testPorts(PortsNeeded()+IntruderPorts), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WithPolicy("allow", testPorts(IntruderPorts)); err == nil || !strings.Contains(err.Error(), `"allow"`) {
		t.Errorf("unknown policy: %v", err)
	}
	if none, _ := p.WithPolicy("", nil); len(none.Store().Policies) != 0 || len(none.Workloads) != len(p.Workloads) {
		t.Error("no policy changed the plan")
	}
	d, err := p.WithPolicy(PolicyDeny, testPorts(PortsNeeded() + IntruderPorts)[PortsNeeded():])
	if err != nil {
		t.Fatal(err)
	}
	// Who each Server's policy allows, keyed by Server name.
	allowed := map[string]string{}
	servers := map[string]int{}
	for _, o := range d.Store().Policies {
		var spec struct {
			Port       int
			TargetRef  struct{ Name string }
			Identities []string
		}
		if err := json.Unmarshal(o.Spec, &spec); err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "Server":
			servers[o.Metadata.Name] = spec.Port
		case "AuthorizationPolicy":
			allowed[spec.TargetRef.Name] = strings.Join(spec.Identities, ",")
		}
	}
	id := func(sa string) string { return "spiffe://cluster.local/ns/demo/sa/" + sa }
	want := map[string]string{"web": id("loadgen"), "books-v1": id("web"), "books-v2": id("web"), "authors": id("books")}
	for name, who := range want {
		if allowed[name] != who {
			t.Errorf("server %s allows %q, want %q", name, allowed[name], who)
		}
	}
	if len(allowed) != len(want) || len(servers) != len(want) {
		t.Errorf("servers %v, policies %v", servers, allowed)
	}
	var in Workload
	for _, w := range d.Workloads {
		if w.ServiceAccount == "intruder" {
			in = w
		}
		if servers[w.Name] != 0 && servers[w.Name] != w.AppPort {
			t.Errorf("server %s on port %d, the app listens on %d", w.Name, servers[w.Name], w.AppPort)
		}
	}
	if in.Target != "books" || !strings.Contains(strings.Join(appArgs(in, 50), " "), "--rps 5 --target books.demo:80") {
		t.Errorf("intruder %+v args %v", in, appArgs(in, 50))
	}
	if err := d.Store().Validate(); err != nil {
		t.Error(err)
	}
}
