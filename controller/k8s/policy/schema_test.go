package policy

import (
	"fmt"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

// TestRateLimitTargetSchema applies RateLimits to a real kube-apiserver
// with the generated CRD: a Service target takes a rate only, with the
// group "" (or none); a Server target keeps the shapes written before
// Services could be targets (group policy.trellis.io or none); a broken
// object is refused with the CRD's message.
func TestRateLimitTargetSchema(t *testing.T) {
	ctx, dc := crdClient(t)
	gvr := schema.GroupVersionResource{Group: "policy.trellis.io", Version: "v1alpha1", Resource: "ratelimits"}
	for i, tt := range []struct{ name, spec, refused string }{
		{"service", `{targetRef: {kind: Service, name: books}, requestsPerSecond: 50, burst: 100}`, ""},
		{"service, group empty", `{targetRef: {group: "", kind: Service, name: books}, requestsPerSecond: 50}`, ""},
		{"server, as before", `{targetRef: {group: policy.trellis.io, kind: Server, name: web}, requestsPerSecond: 5, concurrency: 2}`, ""},
		{"server, no group", `{targetRef: {kind: Server, name: web}, perClient: {requestsPerSecond: 5}}`, ""},
		{"service with concurrency", `{targetRef: {kind: Service, name: books}, requestsPerSecond: 5, concurrency: 2}`, "a RateLimit on a Service limits each client proxy's own requests"},
		{"service with perClient", `{targetRef: {kind: Service, name: books}, requestsPerSecond: 5, perClient: {requestsPerSecond: 1}}`, "apply to a Server only"},
		{"service without a rate", `{targetRef: {kind: Service, name: books}, adaptiveConcurrency: {enabled: true}}`, "set requestsPerSecond (and burst)"},
		{"service with the policy group", `{targetRef: {group: policy.trellis.io, kind: Service, name: books}, requestsPerSecond: 5}`, `a Service group "" (or none)`},
		{"server with the core group", `{targetRef: {group: "", kind: Server, name: web}, requestsPerSecond: 5}`, "a Server has group policy.trellis.io (or none)"},
		{"another kind", `{targetRef: {kind: Deployment, name: books}, requestsPerSecond: 5}`, `Unsupported value: "Deployment"`},
	} {
		doc := fmt.Sprintf(`{apiVersion: policy.trellis.io/v1alpha1, kind: RateLimit, metadata: {name: rl-%d, namespace: default}, spec: %s}`, i, tt.spec)
		body, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		_, err = dc.Resource(gvr).Namespace("default").Patch(ctx, fmt.Sprintf("rl-%d", i), types.ApplyPatchType, body,
			metav1.PatchOptions{FieldManager: "kubectl", FieldValidation: "Strict", Force: new(true)})
		switch {
		case tt.refused == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.refused != "" && err == nil:
			t.Errorf("%s: accepted", tt.name)
		case tt.refused != "" && !strings.Contains(err.Error(), tt.refused):
			t.Errorf("%s: refused with %q, want it to say %q", tt.name, err, tt.refused)
		}
	}
}
