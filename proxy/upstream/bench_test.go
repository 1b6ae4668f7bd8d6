package upstream

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// BenchmarkServeRetryPolicy is the upstream stage's cost per request that
// succeeds at once, without a route and with a retry policy (the
// budget's deposit, the decision on the response): the difference is
// what retries that cannot storm add to a request that needs none.
func BenchmarkServeRetryPolicy(b *testing.B) {
	for _, bc := range []struct {
		name  string
		route *apiv1.Route
	}{
		{"no route", nil},
		{"retry policy", &apiv1.Route{Retry: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			errs := &proxyerr.Renderer{Direction: metrics.Outbound, Log: ratelog.New(nil, 0)}
			ok := rtFunc(func(*http.Request) (*http.Response, error) {
				return &http.Response{StatusCode: 200, Header: http.Header{}, Body: http.NoBody}, nil
			})
			stage := &Stage{
				Metrics: m, Errors: errs, Log: slog.New(slog.DiscardHandler),
				Mesh:        func(context.Context, balance.Endpoint) (http.RoundTripper, error) { return ok, nil },
				Unprocessed: func(error) bool { return false },
				Budgets:     retry.NewBudgets(0), Replay: retry.NewBytes(0),
			}
			bal := balance.New()
			id := identity.ID{TrustDomain: "td", Namespace: "b", ServiceAccount: "b"}
			bal.Update([]balance.Endpoint{{Addr: "10.0.0.1:4143", Identity: id}, {Addr: "10.0.0.2:4143", Identity: id}})
			o := &pipeline.Observe{Direction: metrics.Outbound, Metrics: m, Errors: errs, Next: pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				x.Dest, x.Authority, x.Route = pipeline.Dest{Dst: "b.ns:80", Balancer: bal}, "b.ns:80", bc.route
				x.Key.DstService = x.Dest.Dst
				return stage.Serve(x)
			})}
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, "http://b.ns/", nil)
				o.ServeHTTP(w, r)
				_, _ = io.Copy(io.Discard, w.Body)
			}
		})
	}
}
