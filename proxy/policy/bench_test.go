package policy

import (
	"context"
	"fmt"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/grpc"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
)

const benchClient = "spiffe://cluster.local/ns/web/sa/web"

// onePolicy answers every port with one ServerPolicy.
type onePolicy struct {
	apiv1.UnimplementedPolicyServer
	sp *apiv1.ServerPolicy
}

func (s onePolicy) WatchInbound(_ *apiv1.InboundPolicyRequest, st grpc.ServerStreamingServer[apiv1.ServerPolicy]) error {
	if err := st.Send(s.sp); err != nil {
		return err
	}
	<-st.Context().Done()
	return nil
}

func benchServerPolicy(n int) *apiv1.ServerPolicy {
	sp := &apiv1.ServerPolicy{Name: "server/books", Source: "server", Access: apiv1.AccessPolicy_DENY}
	for i := range n {
		id := fmt.Sprintf("spiffe://cluster.local/ns/ns%d/sa/client", i)
		if i == n-1 {
			id = benchClient
		}
		sp.Authorizations = append(sp.Authorizations, &apiv1.Authorization{Name: fmt.Sprint("a", i), Identities: []string{id},
			Nets: []*apiv1.Network{{Cidr: "10.0.0.0/8", Except: []string{"10.255.0.0/16"}}}})
		sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: fmt.Sprint("r", i),
			Matches: []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i), Method: "GET"}}})
	}
	sp.Routes = append(sp.Routes, &apiv1.InboundRoute{Name: "books", Matches: []*apiv1.RouteMatch{{PathPrefix: "/books"}}})
	return sp
}

// BenchmarkAuthorize: the authz stage alone per request: the port's
// policy from a real Watcher (answered by a real Policy server on
// loopback), the compiled-policy cache, Decide and the allow counter;
// "none" is the default Authorizer the proxy had before enforcement.
func BenchmarkAuthorize(b *testing.B) {
	c := Caller{Identity: benchClient, TLS: true, ClientIP: netip.MustParseAddr("10.1.2.3"), Port: 8080}
	r := httptest.NewRequest("GET", "/books/1", nil)
	b.Run("none", func(b *testing.B) {
		d, err := NewDefaultIn(AllUnauthenticated, "cluster.local")
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if err := d.Authorize(context.Background(), c, r); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			addr, _ := grpctest.Serve(b, "127.0.0.1:0", func(gs *grpc.Server) {
				apiv1.RegisterPolicyServer(gs, onePolicy{sp: benchServerPolicy(n)})
			})
			w, err := inboundpolicy.New(apiv1.NewPolicyClient(grpctest.Dial(b, addr)), inboundpolicy.Options{
				Workload: "spiffe://cluster.local/ns/books/sa/books", Ports: []uint16{8080}})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if s := w.Get(ctx, 8080); !s.FromController {
				b.Fatal("no answer from the Policy server")
			}
			e, err := NewEnforcer(EnforcerConfig{Source: w, TrustDomain: "cluster.local"})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := e.Authorize(context.Background(), c, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
