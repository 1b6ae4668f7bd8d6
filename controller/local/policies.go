package local

import (
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/storepolicy"
)

// policySource answers Policy streams from the store file's policies.
// Every edit of the file closes the Current channel, so open streams
// resolve again and push the new answer when it differs.
type policySource struct{ st *store.Store }

// Resolve implements policy.Source.
func (s policySource) Resolve(workload string, port uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	cfg, changed := s.st.Current()
	return resolvePolicy(cfg, workload, port), changed, func() {}
}

// resolvePolicy is the answer for a workload's port: the Server of the
// file that selects one of the identity's workloads on that port, else
// the default: source "default", access unspecified, so the proxy applies
// its own --default-inbound-policy (local mode has no namespace
// annotations).
func resolvePolicy(cfg *store.Config, workload string, port uint32) *apiv1.ServerPolicy {
	if id, err := identity.Parse(workload); err == nil {
		var labels []map[string]string
		for _, w := range cfg.WorkloadsWithIdentity(id) {
			labels = append(labels, w.Labels)
		}
		if sp := storepolicy.Resolve(cfg.Policies, id.Namespace, labels, port); sp != nil {
			return sp
		}
	}
	return &apiv1.ServerPolicy{Name: storepolicy.SourceDefault, Source: storepolicy.SourceDefault, Protocol: protocolFor(cfg, workload, port)}
}
