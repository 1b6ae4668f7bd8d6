// Package answer holds the parts of the Policy API's answer that need no
// Kubernetes types (internal/policymodel needs them; the mode-neutral
// controller/policy must not): the default answer and its names.
package answer

import apiv1 "github.com/trellis-mesh/trellis/api/v1"

// Sources of an answer (ServerPolicy.source), and names.
const (
	SourceServer  = "server"
	SourceDefault = "default"
	// DefaultName names the default answer.
	DefaultName = "default"
	// ProbesRoute names the route of the kubelet's probes in a default
	// answer.
	ProbesRoute = "probes"
)

// Default is the answer of a port no Server selects: the proxy's
// configured default (access UNSPECIFIED), and when probePaths is not
// empty a route allowing unauthenticated GETs of exactly those paths, so
// a default of deny never fails the kubelet's probes.
func Default(protocol apiv1.ProtocolHint_Protocol, probePaths []string) *apiv1.ServerPolicy {
	p := &apiv1.ServerPolicy{Name: DefaultName, Protocol: protocol, Source: SourceDefault}
	if len(probePaths) > 0 {
		r := &apiv1.InboundRoute{Name: ProbesRoute, Authorizations: []*apiv1.Authorization{{Name: ProbesRoute, Unauthenticated: true}}}
		for _, path := range probePaths {
			r.Matches = append(r.Matches, &apiv1.RouteMatch{Method: "GET", PathExact: path})
		}
		p.Routes = []*apiv1.InboundRoute{r}
	}
	return p
}
