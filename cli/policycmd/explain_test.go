package policycmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// store is a local store file: books (port 9101) allows web, and
// networks 10/8 but 10.1/16 without mesh TLS; authors has no Server.
const store = `
services:
  - {name: books, namespace: demo, ports: [{port: 80}]}
workloads:
  - {name: books-v1, namespace: demo, serviceAccount: books, token: tok-books-0123456789, proxyAddr: "127.0.0.1:1", labels: {app: books}, endpoints: [{service: books, port: 80, targetPort: 9101}]}
  - {name: authors, namespace: demo, serviceAccount: authors, token: tok-authors-0123456789, proxyAddr: "127.0.0.1:2", labels: {app: authors}, endpoints: []}
policies:
  - {apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: books, namespace: demo}, spec: {podSelector: {matchLabels: {app: books}}, port: 9101}}
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: from-web, namespace: demo}, spec: {targetRef: {kind: Server, name: books}, identities: ["spiffe://cluster.local/ns/demo/sa/web"]}}
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: from-lan, namespace: demo}, spec: {targetRef: {kind: Server, name: books}, networks: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]}}
  - {apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: from-admin-sa, namespace: demo}, spec: {targetRef: {kind: Server, name: books}, serviceAccounts: [{name: admin}]}}
`

func TestExplainLocal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mesh.yaml")
	if err := os.WriteFile(path, []byte(store), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		from, to, ip, def string
		port              uint32
		decision, by      string
		reason            string
	}{
		{"demo/web", "books", "", "", 9101, "allowed", "from-web", ""},
		{"spiffe://cluster.local/ns/demo/sa/web", "books-v1", "", "", 9101, "allowed", "from-web", ""},
		{"demo/loadgen", "books", "", "", 9101, "denied", "", "unauthorized"},
		// serviceAccounts: translated by internal/policymodel, as on Kubernetes.
		{"demo/admin", "books", "", "", 9101, "allowed", "from-admin-sa", ""},
		{"unauthenticated", "books", "10.2.3.4", "", 9101, "allowed", "from-lan", ""},
		{"unauthenticated", "books", "10.1.3.4", "", 9101, "denied", "", "unauthorized"},
		// No Server on authors: the proxy's default decides.
		{"unauthenticated", "authors", "", "", 7000, "allowed", "", ""},
		{"unauthenticated", "authors", "", "all-authenticated", 7000, "denied", "", "unauthenticated"},
		{"demo/loadgen", "authors", "", "audit", 7000, "audited", "", "unauthorized"},
	}
	for _, tt := range tests {
		o := explainOpts{common: common{namespace: "demo", config: path}, from: tt.from, to: tt.to, port: tt.port, fromIP: tt.ip, def: tt.def, trustDomain: "cluster.local"}
		e, err := o.run(t.Context())
		if err != nil {
			t.Errorf("%+v: %v", tt, err)
			continue
		}
		if e.Decision != tt.decision || e.Reason != tt.reason || (tt.by != "" && e.Authz != tt.by) {
			t.Errorf("%s -> %s:%d (ip %s, default %q): %+v, want %s by %q reason %q", tt.from, tt.to, tt.port, tt.ip, tt.def, e, tt.decision, tt.by, tt.reason)
		}
	}
	for _, bad := range []struct{ to, from, want string }{
		{"nobody", "demo/web", `workload "nobody"`},
		{"books", "web", `--from "web"`},
	} {
		o := explainOpts{common: common{namespace: "demo", config: path}, from: bad.from, to: bad.to, port: 9101, trustDomain: "cluster.local"}
		if _, err := o.run(t.Context()); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: error %v, want %q", bad, err, bad.want)
		}
	}
	o := explainOpts{common: common{namespace: "other", config: path}, from: "demo/web", to: "books", port: 9101, trustDomain: "cluster.local"}
	if _, err := o.run(t.Context()); err == nil || !strings.Contains(err.Error(), `namespace "other"`) {
		t.Errorf("unknown namespace: %v", err)
	}
}
