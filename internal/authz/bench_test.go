package authz

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/trellis-mesh/trellis/internal/authz/authztest"
)

func benchIdentity(i int) string { return fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/client", i) }

// benchPolicy is authztest.ServerPolicy compiled: n authorizations and
// routes, the caller allowed by the last.
func benchPolicy(n int) *Policy {
	p, err := Compile(authztest.ServerPolicy(n, benchIdentity(n-1), "10.0.0.0/8", "10.9.0.0/16"), Defaults{TrustDomain: "cluster.local"})
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
