package inject

import (
	"testing"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Every --default-inbound-policy value is accepted from the namespace and
// from the pod, the pod's annotation winning, and reaches the proxy's env.
func TestDefaultInboundPolicyValues(t *testing.T) {
	inj := New(Config{TrustAnchorsPEM: "-----BEGIN CERTIFICATE-----\n"})
	for _, v := range k8slabels.DefaultInboundPolicies() {
		for _, tc := range []struct {
			name        string
			ns, pod     string
			wantInProxy string
		}{
			{"namespace", v, "", v},
			{"pod over namespace", k8slabels.PolicyAllUnauthenticated, v, v},
		} {
			t.Run(v+"/"+tc.name, func(t *testing.T) {
				nsAnn := map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationDefaultInboundPolicy: tc.ns}
				podAnn := map[string]string{}
				if tc.pod != "" {
					podAnn[k8slabels.AnnotationDefaultInboundPolicy] = tc.pod
				}
				res, err := inj.Mutate(testPod(podAnn), "shop", nsAnn)
				if err != nil || !res.Injected {
					t.Fatalf("injected %v: %v", res.Injected, err)
				}
				proxy, _ := findContainer(res.Pod, k8slabels.ProxyContainerName)
				if got := envOf(proxy)["TRELLIS_PROXY_DEFAULT_INBOUND_POLICY"]; got != tc.wantInProxy {
					t.Errorf("proxy env %q, want %q", got, tc.wantInProxy)
				}
			})
		}
	}
}
