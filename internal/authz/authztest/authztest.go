// Package authztest builds synthetic policies for the benchmarks of the
// authorization path (internal/authz, the proxy's stage, the mesh round
// trip), so that they all measure the same shape.
package authztest

import (
	"fmt"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// ServerPolicy is a Server with n authorizations (one client identity
// each, in network cidr minus one exception) of which the last allows
// caller, and n routes besides "books" (prefix /books), the one a request
// for /books/... matches: the worst case of a linear scan. Access is deny.
func ServerPolicy(n int, caller, cidr, except string) *apiv1.ServerPolicy {
	sp := &apiv1.ServerPolicy{Name: "server/books", Source: "server", Access: apiv1.AccessPolicy_DENY}
	for i := range n {
		id := fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/client", i)
		if i == n-1 {
			id = caller
		}
		sp.Authorizations = append(sp.Authorizations, &apiv1.Authorization{Name: fmt.Sprint("a", i), Identities: []string{id},
			Nets: []*apiv1.Network{{Cidr: cidr, Except: []string{except}}}})
		sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: fmt.Sprint("r", i),
			Matches: []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i), Method: "GET"}}})
	}
	sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: "books", Matches: []*apiv1.RouteMatch{{PathPrefix: "/books"}}})
	return sp
}
