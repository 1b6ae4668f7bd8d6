package serve

import (
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/policy"
)

// DefaultPolicy is the Kubernetes mode's policy.Source when the API
// server does not serve the policy.trellis.io CRDs (controller/k8s/policy
// otherwise): every port gets policy.Default with protocol detection, as
// in local mode, so meshing a workload never breaks its callers.
type DefaultPolicy struct{}

var _ policy.Source = DefaultPolicy{}

// Resolve implements policy.Source: the default, which nothing changes (a
// nil channel never closes).
func (DefaultPolicy) Resolve(string, uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	return policy.Default(apiv1.ProtocolHint_UNKNOWN), nil, func() {}
}
