package storepolicy

import (
	"strings"
	"testing"
)

// bad has, in one AuthorizationPolicy, two unknown fields and two bad
// values; the API server reports only one of the four (notes/cli2.md).
const bad = `
apiVersion: policy.trellis.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: demo}
spec:
  targetRef: {kind: Server, name: web}
  identities: ["not-a-spiffe-id"]
  identitees: ["spiffe://cluster.local/ns/demo/sa/web"]
  networks: [{cidr: 10.0.0.0/33}]
  foo: 1
---
# only a comment
---
apiVersion: policy.trellis.io/v1alpha1
kind: Server
metadata: {name: web, namespace: demo}
spec: {podSelector: {matchLabels: {app: web}}, port: http, protocol: HTTP/3, accessPolicy: none}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: other}
`

func TestValidateManifestsReportsEveryProblem(t *testing.T) {
	c, err := ValidateManifests(strings.NewReader(bad))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ object, msg string }{
		{"AuthorizationPolicy demo/bad", `unknown field "spec.identitees"`},
		{"AuthorizationPolicy demo/bad", `unknown field "spec.foo"`},
		{"AuthorizationPolicy demo/bad", `spec.identities[0]: "not-a-spiffe-id"`},
		{"AuthorizationPolicy demo/bad", `spec.networks[0]: cidr: "10.0.0.0/33"`},
		{"Server demo/web", `spec.protocol: "HTTP/3"`},
		{"Server demo/web", `spec.accessPolicy:`},
	}
	if len(c.Problems) != len(want) {
		t.Errorf("%d problems, want %d: %+v", len(c.Problems), len(want), c.Problems)
	}
	for _, w := range want {
		found := false
		for _, p := range c.Problems {
			found = found || p.Object == w.object && strings.Contains(p.Message, w.msg)
		}
		if !found {
			t.Errorf("no problem %q of %s in %+v", w.msg, w.object, c.Problems)
		}
	}
	if c.Objects != 2 || len(c.Skipped) != 1 || !strings.Contains(c.Skipped[0], "document 3: ConfigMap") {
		t.Errorf("objects %d, skipped %q", c.Objects, c.Skipped)
	}
}

func TestValidateManifests(t *testing.T) {
	for _, tt := range []struct {
		name, doc string
		want      string // "" for no problem
	}{
		{"good policy", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a, namespace: d}, spec: {targetRef: {kind: Namespace, name: d}, namespaces: ["*"]}}`, ""},
		{"named port on a cluster", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: s}, spec: {podSelector: {}, port: http}}`, ""},
		{"bad port name", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: s}, spec: {podSelector: {}, port: "no_such port"}}`, "spec.port:"},
		{"port out of range", `{apiVersion: policy.trellis.io/v1alpha1, kind: Server, metadata: {name: s}, spec: {podSelector: {}, port: 70000}}`, "spec.port: 70000"},
		{"wrong type", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a}, spec: {targetRef: {kind: Server, name: s}, identities: "*"}}`, "cannot unmarshal"},
		{"wrong apiVersion", `{apiVersion: policy.trellis.io/v1, kind: Server, metadata: {name: s}, spec: {podSelector: {}, port: 80}}`, "apiVersion:"},
		{"other namespace target", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a, namespace: d}, spec: {targetRef: {kind: Namespace, name: e}, unauthenticated: true}}`, "only its own namespace"},
		{"bad target kind", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a, namespace: d}, spec: {targetRef: {kind: Pod, name: e}, unauthenticated: true}}`, "spec.targetRef.kind"},
		{"allows nobody", `{apiVersion: policy.trellis.io/v1alpha1, kind: AuthorizationPolicy, metadata: {name: a}, spec: {targetRef: {kind: Server, name: s}}}`, "allows nobody"},
		{"unknown metadata field", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: r, labelz: {}}, spec: {targetRef: {kind: Server, name: s}, requestsPerSecond: 5}}`, `unknown field "metadata.labelz"`},
		{"rate limit that limits nothing", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: r}, spec: {targetRef: {kind: Server, name: s}}}`, "set requestsPerSecond"},
		{"service rate limit", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: r}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 5, burst: 10}}`, ""},
		{"service rate limit with concurrency", `{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: r}, spec: {targetRef: {kind: Service, name: books}, requestsPerSecond: 5, concurrency: 2}}`, "apply to a Server only"},
		{"bad name", `{apiVersion: gateway.networking.k8s.io/v1, kind: HTTPRoute, metadata: {name: Bad_Name}, spec: {}}`, "metadata.name"},
	} {
		c, err := ValidateManifests(strings.NewReader(tt.doc))
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		switch {
		case tt.want == "" && len(c.Problems) > 0:
			t.Errorf("%s: problems %+v", tt.name, c.Problems)
		case tt.want != "" && (len(c.Problems) != 1 || !strings.Contains(c.Problems[0].Message, tt.want)):
			t.Errorf("%s: problems %+v, want one with %q", tt.name, c.Problems, tt.want)
		}
	}
}

func FuzzValidateManifests(f *testing.F) {
	f.Add(bad)
	f.Add("{}")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = ValidateManifests(strings.NewReader(s)) // never panics
	})
}

func TestValidateManifestsRefusesHugeDocument(t *testing.T) {
	huge := "kind: Server\nx: \"" + strings.Repeat("a", 5<<20) + "\"\n"
	if _, err := ValidateManifests(strings.NewReader(huge)); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("a 5 MiB document: %v", err)
	}
}
