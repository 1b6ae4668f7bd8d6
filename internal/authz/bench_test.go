package authz

import (
	"fmt"
	"net/http"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func benchIdentity(i int) string { return fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/client", i) }

// benchPolicy is a server with n authorizations (one identity each, in a
// network) and n routes, access deny.
func benchPolicy(n int) *Policy {
	sp := &apiv1.ServerPolicy{Name: "books", Access: apiv1.AccessPolicy_DENY}
	for i := range n {
		sp.Authorizations = append(sp.Authorizations, &apiv1.Authorization{Name: fmt.Sprint("a", i),
			Identities: []string{benchIdentity(i)}, Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.9.0.0/16"}}}})
		sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: fmt.Sprint("r", i),
			Matches: []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i), Method: "GET"}}})
	}
	sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: "books", Matches: []*apiv1.RouteMatch{{PathPrefix: "/books"}}})
	p, err := Compile(sp, Defaults{TrustDomain: "cluster.local"})
	if err != nil {
		panic(err)
	}
	return p
}

// BenchmarkDecide: the last authorization allows the caller (the worst
// case of the scan), the route is the last one.
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		p := benchPolicy(n)
		in := Input{Identity: benchIdentity(n - 1), TLS: true, ClientIP: ip("10.1.2.3"), Method: "GET", Path: "/books/1", Header: http.Header{}}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !p.Decide(in).Allowed {
					b.Fatal("denied")
				}
			}
		})
	}
}
