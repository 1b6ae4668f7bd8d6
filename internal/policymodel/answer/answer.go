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
// empty the ProbesRoute, so a default of deny never fails the kubelet's
// probes.
func Default(protocol apiv1.ProtocolHint_Protocol, probePaths []string) *apiv1.ServerPolicy {
	p := &apiv1.ServerPolicy{Name: DefaultName, Protocol: protocol, Source: SourceDefault}
	if r := Probes(probePaths); r != nil {
		p.Routes = []*apiv1.InboundRoute{r}
	}
	return p
}

// Probes is the route of the kubelet's HTTP probes: unauthenticated GETs
// of exactly probePaths; nil without paths. The default answer lets it in
// (a route), and a Server's limits exempt the plaintext requests it
// matches (Limits.probes): one rule for both.
func Probes(probePaths []string) *apiv1.InboundRoute {
	if len(probePaths) == 0 {
		return nil
	}
	r := &apiv1.InboundRoute{Name: ProbesRoute, Authorizations: []*apiv1.Authorization{{Name: ProbesRoute, Unauthenticated: true}}}
	for _, path := range probePaths {
		r.Matches = append(r.Matches, &apiv1.RouteMatch{Method: "GET", PathExact: path})
	}
	return r
}
