package store

import (
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/controller/authority"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(validYAML))
	f.Add([]byte(""))
	f.Add([]byte("services: [{name: a, namespace: b, ports: [{port: 1}]}]"))
	f.Add([]byte("workloads: [{name: a, namespace: b, serviceAccount: c, token: 0123456789abcdef, proxyAddr: '[::1]:1'}]"))
	f.Add([]byte("trustDomain: 42\ncertificateLifetime: -1h\n"))
	f.Add([]byte("&a [*a, *a]"))
	f.Add([]byte("policies: [{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: s, namespace: demo}, spec: {port: 80}}, {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: p, namespace: demo}, spec: {targetRef: {kind: Server, name: s}, networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}}]"))
	f.Add([]byte("services: [{name: a, namespace: b, ports: [{port: 1}]}]\nroutes: [{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: r, namespace: b, annotations: {retry.trellis.io/limit: '2'}}, spec: {parentRefs: [{kind: Service, name: a}], rules: [{matches: [{path: {type: RegularExpression, value: '/x+'}}], backendRefs: [{name: a, port: 1, weight: 9}]}]}}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		// A valid config must be internally consistent: every backend's
		// workload is findable by address and identity.
		for _, w := range c.Workloads {
			if c.WorkloadAt(w.ProxyAddr) != w {
				t.Fatalf("workload %s not indexed by address", w.Name)
			}
			if err := w.Identity.Validate(); err != nil {
				t.Fatal(err)
			}
			if len(w.Token) < MinTokenLength {
				t.Fatal("short token accepted")
			}
		}
		for _, s := range c.Services {
			for port, bs := range s.Backends {
				if _, ok := s.Ports[port]; !ok {
					t.Fatalf("backend for undeclared port %d", port)
				}
				for _, b := range bs {
					if b.Weight < 1 {
						t.Fatal("zero weight")
					}
				}
			}
		}
	})
}

func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"books.demo:80", "books.demo.svc.cluster.local:80", "[::1]:80", "1.2.3.4:5", "a:1", ":", "[", "x:99999", "B.D.:8"} {
		f.Add(s)
	}
	c, err := Parse([]byte(validYAML))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := authority.Parse(s)
		if err != nil {
			return
		}
		if a.Port == 0 || a.Port > 65535 {
			t.Fatalf("port %d accepted", a.Port)
		}
		if (a.Host == "") == !a.IP.IsValid() {
			t.Fatalf("exactly one of host and IP must be set: %+v", a)
		}
		if a.Host != strings.ToLower(a.Host) {
			t.Fatalf("host not lower-cased: %q", a.Host)
		}
		// The canonical form parses back to the same authority.
		b, err := authority.Parse(a.String())
		if err != nil || b != a {
			t.Fatalf("round trip of %q: %+v, %v", a.String(), b, err)
		}
		_ = c.Resolve(a, "demo")
	})
}
