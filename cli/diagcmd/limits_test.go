package diagcmd

import (
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
)

// TestWriteLimits: every kind of limit a RateLimit sends is shown.
func TestWriteLimits(t *testing.T) {
	var b strings.Builder
	writeLimits(&b, &apiv1.Limits{RequestsPerSecond: 100, Burst: 200, ClientRequestsPerSecond: 20,
		Overrides:           []*apiv1.ClientLimit{{Identities: []string{"spiffe://td/ns/a/sa/batch"}, RequestsPerSecond: 60}},
		AdaptiveConcurrency: &apiv1.AdaptiveConcurrency{MaxLimit: 50},
		Probes:              answer.Probes([]string{"/live", "/ready"})})
	for _, want := range []string{"limits: 100 rps (burst 200), 0 concurrent", "per client: 20 rps", "override: 60 rps (burst 0) for spiffe://td/ns/a/sa/batch", "adaptive concurrency: on (min 0, max 50",
		"exempt: plaintext kubelet probes GET /live, GET /ready"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in\n%s", want, b.String())
		}
	}
}
