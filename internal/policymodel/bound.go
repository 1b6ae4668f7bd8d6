package policymodel

import (
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/routematch"
)

// bound trims an answer to MaxAnswerBytes: routes first, then the
// server's authorizations, from the last (by name). Both only ever allow,
// so leaving them out fails closed. Objects are bounded by the CRDs; only
// a namespace holding hundreds of large policies for one Server gets here.
func bound(p *apiv1.ServerPolicy) (dropped []string) {
	dropped = boundCounts(p)
	size := proto.Size(p)
	for size > MaxAnswerBytes {
		switch {
		case len(p.Routes) > 0:
			r := p.Routes[len(p.Routes)-1]
			p.Routes = p.Routes[:len(p.Routes)-1]
			dropped = append(dropped, "route "+r.GetName())
			size -= proto.Size(r)
		case len(p.Authorizations) > 0:
			a := p.Authorizations[len(p.Authorizations)-1]
			p.Authorizations = p.Authorizations[:len(p.Authorizations)-1]
			dropped = append(dropped, "authorization "+a.GetName())
			size -= proto.Size(a)
		default:
			return dropped
		}
	}
	return dropped
}

// boundCounts trims an answer to what the proxy compiles: at most
// routematch.MaxMatches route matches and authz.MaxAuthorizations
// authorizations. Past them the proxy refuses the whole answer and keeps
// its default for the port (all-unauthenticated unless configured), so a
// namespace with many small HTTPRoutes would open a Server's port; routes
// go first, from the last, as in bound.
func boundCounts(p *apiv1.ServerPolicy) (dropped []string) {
	matches, authzs := 0, len(p.Authorizations)
	for _, r := range p.Routes {
		matches += len(r.Matches)
		authzs += len(r.Authorizations)
	}
	for len(p.Routes) > 0 && (matches > routematch.MaxMatches || authzs > authz.MaxAuthorizations) {
		r := p.Routes[len(p.Routes)-1]
		p.Routes = p.Routes[:len(p.Routes)-1]
		matches -= len(r.Matches)
		authzs -= len(r.Authorizations)
		dropped = append(dropped, "route "+r.GetName())
	}
	for authzs > authz.MaxAuthorizations {
		a := p.Authorizations[len(p.Authorizations)-1]
		p.Authorizations = p.Authorizations[:len(p.Authorizations)-1]
		authzs--
		dropped = append(dropped, "authorization "+a.GetName())
	}
	return dropped
}
