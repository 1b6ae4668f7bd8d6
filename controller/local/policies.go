package local

import (
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
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

// resolvePolicy is the answer for a workload's port, translated by
// internal/policymodel from the file's policies and the identity's
// workloads. The default (no Server selects the port) keeps the protocol
// of the service port targeting it; its access stays unspecified, so the
// proxy applies its own --default-inbound-policy (local mode has no
// namespace annotations).
func resolvePolicy(cfg *store.Config, workload string, port uint32) *apiv1.ServerPolicy {
	id, err := identity.Parse(workload)
	if err != nil {
		return answer.Default(protocolFor(cfg, workload, port), nil)
	}
	var ws []storepolicy.Workload
	for _, w := range cfg.WorkloadsWithIdentity(id) {
		ws = append(ws, storepolicy.Workload{Name: w.Name, Labels: w.Labels})
	}
	sp := cfg.Policies.Answer(id.Namespace, ws, port, cfg.TrustDomain)
	if sp.GetSource() == answer.SourceDefault {
		sp.Protocol = protocolFor(cfg, workload, port)
	}
	return sp
}
