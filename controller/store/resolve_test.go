package store

import (
	"testing"
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
			a, err := ParseAuthority(tt.authority)
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

func TestParseAuthorityErrors(t *testing.T) {
	for _, s := range []string{
		"", "books.demo", "books.demo:", "books.demo:0", "books.demo:65536", "books.demo:+80", "books.demo:-1",
		":80", "bad_host.demo:80", "::1:80", "[::1:80", "[127.0.0.1]:80", "a..b:80", "[fe80::1%eth0]:80",
	} {
		if a, err := ParseAuthority(s); err == nil {
			t.Errorf("ParseAuthority(%q) = %+v, want error", s, a)
		}
	}
}

func TestAuthorityString(t *testing.T) {
	for in, want := range map[string]string{
		"Books.Demo.:80":     "books.demo:80",
		"[::1]:80":           "[::1]:80",
		"127.0.0.1:4243":     "127.0.0.1:4243",
		"[::ffff:1.2.3.4]:1": "1.2.3.4:1",
	} {
		a, err := ParseAuthority(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.String(); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}
