package policymodel

import (
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// bound trims an answer to MaxAnswerBytes: routes first, then the
// server's authorizations, from the last (by name). Both only ever allow,
// so leaving them out fails closed. Objects are bounded by the CRDs; only
// a namespace holding hundreds of large policies for one Server gets here.
func bound(p *apiv1.ServerPolicy) (dropped []string) {
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
