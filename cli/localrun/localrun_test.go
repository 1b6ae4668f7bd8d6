package localrun

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/store"
)

func TestParseServices(t *testing.T) {
	tests := []struct {
		specs   []string
		want    []Service
		wantErr string
	}{
		{specs: []string{"myapp=127.0.0.1:8080"}, want: []Service{{"myapp", "127.0.0.1:8080"}}},
		{specs: []string{"a=127.0.0.1:1", "b-2=[::1]:65535"}, want: []Service{{"a", "127.0.0.1:1"}, {"b-2", "[::1]:65535"}}},
		{specs: []string{"web=localhost:80"}, want: []Service{{"web", "localhost:80"}}},
		{specs: nil, wantErr: "at least one"},
		{specs: []string{"myapp"}, wantErr: "want NAME=HOST:PORT"},
		{specs: []string{"MyApp=127.0.0.1:80"}, wantErr: "DNS label"},
		{specs: []string{"-x=127.0.0.1:80"}, wantErr: "DNS label"},
		{specs: []string{"client=127.0.0.1:80"}, wantErr: "other than"},
		{specs: []string{"a=127.0.0.1:80", "a=127.0.0.1:81"}, wantErr: "named twice"},
		{specs: []string{"a=127.0.0.1"}, wantErr: "HOST:PORT"},
		{specs: []string{"a=:80"}, wantErr: "HOST:PORT"},
		{specs: []string{"a=127.0.0.1:0"}, wantErr: "1-65535"},
		{specs: []string{"a=127.0.0.1:70000"}, wantErr: "1-65535"},
		{specs: []string{"a=127.0.0.1:http"}, wantErr: "1-65535"},
	}
	for _, tt := range tests {
		got, err := ParseServices(tt.specs)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseServices(%q) = %v, %v; want error containing %q", tt.specs, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tt.want) {
			t.Errorf("ParseServices(%q) = %v, %v; want %v", tt.specs, got, err, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParseServices(%q)[%d] = %v, want %v", tt.specs, i, got[i], tt.want[i])
			}
		}
	}
}

// TestPlanStoreIsValid feeds the generated store to the controller's own
// parser: what trellis run writes is what the controller accepts, with
// each app's service backed by its own workload and identity.
func TestPlanStoreIsValid(t *testing.T) {
	services := []Service{{"books", "127.0.0.1:9101"}, {"authors", "127.0.0.1:9102"}}
	ports := make([]int, PortsNeeded(len(services)))
	for i := range ports {
		ports[i] = 20000 + i
	}
	p, err := NewPlan(t.TempDir(), "local", services, ports)
	if err != nil {
		t.Fatal(err)
	}
	data, err := p.Store().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := store.Parse(data)
	if err != nil {
		t.Fatalf("the controller refuses the store: %v\n%s", err, data)
	}
	if len(cfg.Services) != 2 || len(cfg.Workloads) != 3 {
		t.Fatalf("parsed %d services, %d workloads; want 2, 3\n%s", len(cfg.Services), len(cfg.Workloads), data)
	}
	if p.Client.Outbound != "127.0.0.1:20002" || p.Servers[1].Admin != "127.0.0.1:20012" || p.Servers[1].Tap != "127.0.0.1:20013" {
		t.Errorf("ports laid out as client outbound %s, authors admin %s, tap %s", p.Client.Outbound, p.Servers[1].Admin, p.Servers[1].Tap)
	}
	if w := p.Store().Workloads; w[2].TapAddr != p.Servers[1].Tap {
		t.Errorf("store tapAddr of %s = %q, want %s", w[2].Name, w[2].TapAddr, p.Servers[1].Tap)
	}
	args := strings.Join(proxyArgs(p, p.Servers[0]), " ")
	for _, want := range []string{"--app-addr 127.0.0.1:9101", "--identity spiffe://cluster.local/ns/local/sa/books", "--inbound-addr " + p.Servers[0].Inbound, "--tap-addr " + p.Servers[0].Tap} {
		if !strings.Contains(args, want) {
			t.Errorf("books proxy args %q lack %q", args, want)
		}
	}
	if strings.Contains(strings.Join(proxyArgs(p, p.Client), " "), "--app-addr") {
		t.Error("the client proxy has an app address")
	}
}
