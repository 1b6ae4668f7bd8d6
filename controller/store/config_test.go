package store

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

const validYAML = `
trustDomain: example.org
certificateLifetime: 1h
services:
  - name: books
    namespace: demo
    ports:
      - port: 80
        protocol: http
      - port: 9090
        protocol: grpc
  - name: empty
    namespace: demo
    ports: [{port: 80}]
  - name: h2only
    namespace: demo
    ports: [{port: 81, protocol: h2c}]
workloads:
  - name: books-v1
    namespace: demo
    serviceAccount: books
    token: 0123456789abcdef-v1
    proxyAddr: 127.0.0.1:4243
    zone: zone-a
    labels: {version: v1}
    endpoints:
      - service: books
        port: 80
        targetPort: 9101
      - service: books
        port: 9090
        weight: 3
  - name: books-v2
    namespace: demo
    serviceAccount: books
    token: 0123456789abcdef-v2
    proxyAddr: "[::1]:4244"
    endpoints:
      - service: books
        port: 80
`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.TrustDomain != "example.org" || c.ClusterDomain != "cluster.local" || c.CertificateLifetime != time.Hour {
		t.Fatalf("defaults: %+v", c)
	}
	s := c.Service("demo", "books")
	if s == nil || s.Ports[80] != "http" || s.Ports[9090] != "grpc" {
		t.Fatalf("service: %+v", s)
	}
	if s := c.Service("demo", "h2only"); s == nil || s.Ports[81] != ProtocolH2C {
		t.Fatalf("h2c service: %+v", s)
	}
	if got := len(s.Backends[80]); got != 2 {
		t.Fatalf("port 80 backends = %d, want 2", got)
	}
	b := s.Backends[9090]
	if len(b) != 1 || b[0].Weight != 3 || b[0].TargetPort != 0 || b[0].Workload.Name != "books-v1" {
		t.Fatalf("port 9090 backends: %+v", b)
	}
	if s.Backends[80][0].Weight != 1 || s.Backends[80][0].TargetPort != 9101 {
		t.Fatalf("default weight/targetPort: %+v", s.Backends[80][0])
	}
	w := c.WorkloadAt(netip.MustParseAddrPort("[::1]:4244"))
	if w == nil || w.Name != "books-v2" {
		t.Fatalf("WorkloadAt v6: %+v", w)
	}
	if got := w.Identity.String(); got != "spiffe://example.org/ns/demo/sa/books" {
		t.Fatalf("identity %s", got)
	}
	if n := len(c.WorkloadsWithIdentity(w.Identity)); n != 2 {
		t.Fatalf("workloads with identity = %d, want 2", n)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte("services: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.TrustDomain != "cluster.local" || c.CertificateLifetime != 24*time.Hour {
		t.Fatalf("defaults: td=%q lifetime=%s", c.TrustDomain, c.CertificateLifetime)
	}
	if _, err := Parse(nil); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	base := func(replace, with string) string {
		if !strings.Contains(validYAML, replace) {
			t.Fatalf("test bug: %q not in validYAML", replace)
		}
		return strings.Replace(validYAML, replace, with, 1)
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top field", validYAML + "extra: 1\n", `unknown field "extra"`},
		{"unknown nested field", base("zone: zone-a", "zone: zone-a\n    color: red"), `unknown field "color"`},
		{"not yaml", "services: [", "decode store file"},
		{"bad trust domain", base("example.org", "Example_Org"), "trustDomain"},
		{"bad lifetime", base("certificateLifetime: 1h", "certificateLifetime: soon"), "certificateLifetime"},
		{"short lifetime", base("certificateLifetime: 1h", "certificateLifetime: 1s"), "certificateLifetime"},
		{"bad service name", base("- name: books\n", "- name: Books\n"), "services[0].name"},
		{"missing namespace", base("    namespace: demo\n    ports:\n      - port: 80\n        protocol: http", "    ports:\n      - port: 80\n        protocol: http"), "services[0] (books).namespace"},
		{"no ports", base("ports: [{port: 80}]", "ports: []"), "services[1] (empty.demo).ports"},
		{"port zero", base("port: 9090\n        protocol", "port: 0\n        protocol"), "services[0] (books.demo).ports[1].port"},
		{"port too big", base("port: 9090\n        protocol", "port: 70000\n        protocol"), "outside 1-65535"},
		{"port as string", base("port: 9090\n        protocol", "port: \"x\"\n        protocol"), "port"},
		{"bad protocol", base("protocol: grpc", "protocol: udp"), "services[0] (books.demo).ports[1].protocol"},
		{"dup port", base("port: 9090\n        protocol: grpc", "port: 80\n        protocol: grpc"), "duplicate port 80"},
		{"dup service", base("name: empty", "name: books"), "duplicate service"},
		{"dup workload", base("name: books-v2", "name: books-v1"), "duplicate workload"},
		{"no service account", base("    serviceAccount: books\n    token: 0123456789abcdef-v1", "    token: 0123456789abcdef-v1"), "workloads[0] (books-v1.demo).serviceAccount: required"},
		{"bad service account", base("serviceAccount: books\n    token: 0123456789abcdef-v1", "serviceAccount: a.b\n    token: 0123456789abcdef-v1"), "serviceAccount"},
		{"short token", base("token: 0123456789abcdef-v1", "token: short"), "workloads[0] (books-v1.demo).token"},
		{"dup token", base("token: 0123456789abcdef-v2", "token: 0123456789abcdef-v1"), "same token"},
		{"no proxy addr", base("    proxyAddr: 127.0.0.1:4243\n", ""), "proxyAddr: required"},
		{"proxy addr host", base("proxyAddr: 127.0.0.1:4243", "proxyAddr: localhost:4243"), "not ip:port"},
		{"proxy addr port 0", base("proxyAddr: 127.0.0.1:4243", "proxyAddr: 127.0.0.1:0"), "port 0"},
		{"dup proxy addr", base(`proxyAddr: "[::1]:4244"`, "proxyAddr: 127.0.0.1:4243"), "already the address"},
		{"bad label", base("labels: {version: v1}", "labels: {\"a-b\": v1}"), "labels"},
		{"reserved label", base("labels: {version: v1}", "labels: {workload: x}"), "cannot be overridden"},
		{"unknown endpoint service", base("      - service: books\n        port: 9090", "      - service: nope\n        port: 9090"), `no service "nope" in namespace "demo"`},
		{"unknown endpoint port", base("port: 80\n        targetPort", "port: 81\n        targetPort"), "has no port 81"},
		{"bad target port", base("targetPort: 9101", "targetPort: 99999"), "targetPort"},
		{"zero weight", base("weight: 3", "weight: 0"), "weight"},
		{"dup endpoint", base("port: 9090\n        weight: 3", "port: 80\n        weight: 3"), "already backs"},
		{"cross-namespace endpoint", base("namespace: demo\n    serviceAccount: books\n    token: 0123456789abcdef-v2", "namespace: other\n    serviceAccount: books\n    token: 0123456789abcdef-v2"), `in namespace "other"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse succeeded, want error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Fatalf("error leaks a token: %q", err)
			}
		})
	}
}
