package route

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// BenchmarkSelect: the route stage's work per request with 0, 10 and 100
// routes on the service, route metrics included (the outbound BenchmarkRoutesCost puts it
// against a whole mesh round trip).
func BenchmarkSelect(b *testing.B) {
	for _, n := range []int{0, 10, 100} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			var rs []*apiv1.Route
			for i := 0; i < n; i++ {
				rs = append(rs, &apiv1.Route{Name: fmt.Sprintf("ns/r%d", i),
					Matches:  []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i)}},
					Backends: []*apiv1.WeightedBackend{{Authority: "web.ns:80", Weight: 1}}})
			}
			bal := balance.New()
			rm, err := metrics.NewRoutes(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			s := &Stage{Table: table{"web.ns:80": mustCompile(b, rs...)}, Metrics: rm,
				Resolve: func(context.Context, string) (bool, *balance.Balancer, error) { return true, bal, nil }}
			h := s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error { x.Wrote(200, "", nil); return nil }))
			r := httptest.NewRequest(http.MethodGet, fmt.Sprintf("http://web.ns/r%d/x", n/2), nil)
			x := &pipeline.Exchange{}
			b.ReportAllocs()
			for b.Loop() {
				*x = pipeline.Exchange{R: r, Ctx: r.Context()}
				if err := h.Serve(x); err != nil || (n > 0) != (x.Route != nil) {
					b.Fatal(err, x.Route)
				}
			}
		})
	}
}
