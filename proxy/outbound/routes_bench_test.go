package outbound_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/route"
)

// benchRoutes is a service's n routes: mostly path prefixes with a
// method, some header and regex matches (scanned for every request no
// prefix takes), each with a header modifier and the service itself as
// its backend; the request benchmarked matches the middle one.
func benchRoutes(n int) []*apiv1.Route {
	var rs []*apiv1.Route
	for i := 0; i < n; i++ {
		r := &apiv1.Route{Name: fmt.Sprintf("demo/r%d", i),
			Backends:       []*apiv1.WeightedBackend{{Authority: "books.demo:80", Weight: 1}},
			RequestHeaders: &apiv1.HeaderModifier{Set: []*apiv1.HeaderModifier_Header{{Name: "x-route", Value: "r"}}}}
		switch i % 10 {
		case 8:
			r.Matches = []*apiv1.RouteMatch{{Headers: []*apiv1.RouteMatch_Header{{Name: "x-user", Value: fmt.Sprintf("u%d", i)}}}}
		case 9:
			r.Matches = []*apiv1.RouteMatch{{PathRegex: fmt.Sprintf("/re%d/[a-z]+", i)}}
		default:
			r.Matches = []*apiv1.RouteMatch{{PathPrefix: fmt.Sprintf("/r%d", i), Method: "GET"}}
		}
		rs = append(rs, r)
	}
	return rs
}

func benchTarget(n int) string { return fmt.Sprintf("http://books.demo/r%d/books", n/2) }

// routeStageCPU is the CPU of the route stage alone (table lookup,
// selection, backend pick, header modifier, resolution, the route
// metrics) for the benchmark's request with n routes.
func routeStageCPU(b *testing.B, n int) time.Duration {
	src := &routeSource{cfg: map[string]*apiv1.RouteConfig{}}
	if n > 0 {
		src.set("books.demo:80", benchRoutes(n)...)
	}
	bal := balance.New()
	rm, err := metrics.NewRoutes(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	s := &route.Stage{Table: route.NewWatched(src, time.Millisecond, nil), Metrics: rm,
		Resolve: func(context.Context, string) (bool, *balance.Balancer, error) { return true, bal, nil }}
	h := s.Layer(pipeline.HandlerFunc(func(x *pipeline.Exchange) error { x.Wrote(http.StatusOK, "", nil); return nil }))
	r := httptest.NewRequest(http.MethodGet, benchTarget(n), nil)
	x := &pipeline.Exchange{R: r, Ctx: r.Context(), W: httptest.NewRecorder()}
	const calls = 200000
	runtime.GC()
	start := cpuTime()
	for range calls {
		*x = pipeline.Exchange{R: r, Ctx: r.Context(), W: x.W}
		if err := h.Serve(x); err != nil {
			b.Fatal(err)
		}
	}
	return (cpuTime() - start) / calls
}

// BenchmarkRoutesCost: the CPU per request of a mesh round trip (client,
// outbound, mTLS, inbound, app, all in this process) with 0, 10 and 100
// routes on the service; the rounds interleave the configurations so
// that a neighbour's load favours none, and the medians are printed as
// ratios against 0 routes, with the route stage's own added cost
// measured alone (precise where the round trip's noise is a few %). Run
// with -benchtime 1x:
//
//	go test -run XXX -bench BenchmarkRoutesCost -benchtime 1x ./proxy/outbound
func BenchmarkRoutesCost(b *testing.B) {
	counts := []int{0, 10, 100}
	meshes := make([]*mesh, len(counts))
	stages := make([]time.Duration, len(counts))
	for i, n := range counts {
		meshes[i] = newMesh(b)
		if n > 0 {
			meshes[i].src.set("books.demo:80", benchRoutes(n)...)
		}
		burstTo(b, meshes[i].client, benchTarget(n), 800) // warm: connections, the compiled routes
		stages[i] = routeStageCPU(b, n)
	}
	const rounds, perRound = 7, 4000
	cpu := make([][]time.Duration, len(counts))
	for range rounds {
		for i, n := range counts {
			cpu[i] = append(cpu[i], burstTo(b, meshes[i].client, benchTarget(n), perRound))
		}
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	base := med(cpu[0])
	for i, n := range counts {
		m := med(cpu[i])
		added := 100 * float64(stages[i]-stages[0]) / float64(base)
		b.Logf("routes %-3d  round trip cpu/request %7.1f µs  ratio %.3f (%+.1f %%)  route stage %5.0f ns  stage adds %.2f %%", n,
			float64(m.Nanoseconds())/1e3, float64(m)/float64(base), 100*(float64(m)/float64(base)-1), float64(stages[i].Nanoseconds()), added)
		if n == 100 {
			b.ReportMetric(added, "stage-added-%-at-100")
		}
	}
}
