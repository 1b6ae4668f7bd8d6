package store

import (
	"testing"

	"github.com/trellis-mesh/trellis/controller/authority"
)

func TestResolveForms(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	books := c.Service("demo", "books")
	tests := []struct {
		authority, callerNS string
		service             *ServiceInfo
		port                uint32
		workload            string
	}{
		{"books.demo:80", "", books, 80, ""},
		{"books.demo.svc:80", "", books, 80, ""},
		{"books.demo.svc.cluster.local:80", "", books, 80, ""},
		{"books.demo.svc.cluster.local.:80", "", books, 80, ""},
		{"BOOKS.Demo.SVC.Cluster.Local:9090", "", books, 9090, ""},
		{"books:80", "demo", books, 80, ""},
		{"books:80", "", nil, 0, ""},
		{"books.demo:81", "", nil, 0, ""},
		{"books.other:80", "", nil, 0, ""},
		{"books.demo.svc.other.local:80", "", nil, 0, ""},
		{"books.demo.cluster.local:80", "", nil, 0, ""},
		{"127.0.0.1:4243", "", nil, 0, "books-v1"},
		{"[::1]:4244", "", nil, 0, "books-v2"},
		{"[::ffff:127.0.0.1]:4243", "", nil, 0, "books-v1"},
		{"127.0.0.1:4244", "", nil, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.authority+"/"+tt.callerNS, func(t *testing.T) {
			a, err := authority.Parse(tt.authority)
			if err != nil {
				t.Fatal(err)
			}
			got := c.Resolve(a, tt.callerNS)
			if got.Service != tt.service || got.Port != tt.port {
				t.Fatalf("service=%v port=%d, want %v %d", got.Service, got.Port, tt.service, tt.port)
			}
			name := ""
			if got.Workload != nil {
				name = got.Workload.Name
			}
			if name != tt.workload {
				t.Fatalf("workload %q, want %q", name, tt.workload)
			}
			if got.Exists() != (tt.service != nil || tt.workload != "") {
				t.Fatalf("Exists() = %v", got.Exists())
			}
		})
	}
}
