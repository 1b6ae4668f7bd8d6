package scrape

import (
	"context"
	"math"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/trellis-mesh/trellis/viz/model"
)

// proxyMetrics is a registry with the two families the views read, with
// the proxy's labels (docs/metrics.md), written by client_golang as the
// proxy's own registry writes them.
type proxyMetrics struct {
	reg       *prometheus.Registry
	responses *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	// The route metrics of the client's proxy (docs/metrics.md#routes).
	routeReqs *prometheus.CounterVec
	routeLat  *prometheus.HistogramVec
}

func newProxyMetrics(t *testing.T) (*proxyMetrics, string) {
	m := &proxyMetrics{reg: prometheus.NewRegistry()}
	route := []string{"direction", "dst_service", "peer_identity", "tls"}
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_responses_total"},
		append(append([]string(nil), route...), "status_code", "grpc_status", "classification"))
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "trellis_response_latency_seconds",
		Buckets: []float64{0.001, 0.01, 0.1, 1}}, route)
	routeLabels := []string{"route", "rule", "direction", "service", "dst_service", "status_class"}
	m.routeReqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "trellis_route_requests_total"}, routeLabels)
	m.routeLat = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "trellis_route_response_latency_seconds",
		Buckets: []float64{0.001, 0.01, 0.1, 1}}, routeLabels)
	m.reg.MustRegister(m.responses, m.latency, m.routeReqs, m.routeLat)
	srv := httptest.NewServer(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return m, srv.URL + "/metrics"
}

// serve records n responses of dir to dst from/to peer, ok of them
// successes, each taking lat seconds.
func (m *proxyMetrics) serve(dir, dst, peer string, n, ok int, lat float64) {
	tls := "false"
	if peer != "" {
		tls = "true"
	}
	for i := 0; i < n; i++ {
		class, code := "success", "200"
		if i >= ok {
			class, code = "failure", "500"
		}
		m.responses.WithLabelValues(dir, dst, peer, tls, code, "", class).Inc()
		m.latency.WithLabelValues(dir, dst, peer, tls).Observe(lat)
	}
}

// route records n requests a route's rule matched and sent to backend,
// answered with class, each taking lat seconds.
func (m *proxyMetrics) route(route, rule, svc, backend, class string, n int, lat float64) {
	for range n {
		m.routeReqs.WithLabelValues(route, rule, "outbound", svc, backend, class).Inc()
		m.routeLat.WithLabelValues(route, rule, "outbound", svc, backend, class).Observe(lat)
	}
}

const (
	idWeb   = "spiffe://cluster.local/ns/demo/sa/web"
	idBooks = "spiffe://cluster.local/ns/demo/sa/books"
)

func TestStatEdgesRoutes(t *testing.T) {
	web, webURL := newProxyMetrics(t)
	b1, b1URL := newProxyMetrics(t)
	b2, b2URL := newProxyMetrics(t)
	// Traffic before the window: must not count.
	web.serve("outbound", "books.demo:80", idBooks, 50, 50, 0.005)
	b1.serve("inbound", "books.demo:80", idWeb, 50, 50, 0.005)

	now := time.Unix(1000, 0)
	src := &Source{
		Targets: []Target{
			{Resource: model.Resource{Kind: Kind, Name: "web"}, Identity: idWeb, MetricsURL: webURL},
			{Resource: model.Resource{Kind: Kind, Name: "books-v1"}, Identity: idBooks, MetricsURL: b1URL},
			{Resource: model.Resource{Kind: Kind, Name: "books-v2"}, Identity: idBooks, MetricsURL: b2URL},
		},
		Sample: time.Millisecond,
		Now:    func() time.Time { return now },
	}
	ctx := context.Background()
	// The first call scrapes twice (no history); prime the history with
	// the traffic above, then move the clock 10 s.
	if _, err := src.Stat(ctx, model.Query{Resource: model.Resource{Kind: Kind}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	web.serve("outbound", "books.demo:80", idBooks, 100, 90, 0.005)
	b1.serve("inbound", "books.demo:80", idWeb, 60, 54, 0.005)
	b2.serve("inbound", "books.demo:80", idWeb, 40, 36, 0.05)

	rows, err := src.Stat(ctx, model.Query{Resource: model.Resource{Kind: Kind}, Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ req, rps, sr float64 }{
		"web": {0, 0, math.NaN()}, "books-v1": {60, 6, 0.9}, "books-v2": {40, 4, 0.9},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows = %+v", rows)
	}
	for _, r := range rows {
		w := want[r.Resource.Name]
		if r.Requests != w.req || math.Abs(r.RPS-w.rps) > 1e-9 || r.MeshedPods != 1 {
			t.Errorf("%s: requests %v rps %v meshed %d, want %v %v", r.Resource.Name, r.Requests, r.RPS, r.MeshedPods, w.req, w.rps)
		}
		if math.IsNaN(w.sr) != (r.SuccessRate == nil) || (r.SuccessRate != nil && math.Abs(*r.SuccessRate-w.sr) > 1e-9) {
			t.Errorf("%s: success rate %v, want %v", r.Resource.Name, r.SuccessRate, w.sr)
		}
	}

	// Edges: books is served by two workloads with one identity: the
	// destination is the service.
	edges, err := src.Edges(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 1 {
		t.Fatalf("edges = %+v", edges)
	}
	e := edges[0]
	if e.Dst != (model.Resource{Kind: "services", Name: "books"}) || e.SrcIdentity != idWeb || e.DstIdentity != idBooks || !e.MTLS || e.Requests != 100 {
		t.Errorf("edge = %+v", e)
	}
	if e.P50Ms == nil || *e.P50Ms <= 1 || *e.P50Ms > 10 {
		t.Errorf("edge p50 = %v ms, want in (1, 10]", e.P50Ms)
	}

	// --from web: only books' inbound traffic from web's identity.
	rows, err = src.Stat(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "books-v2"}, From: model.Resource{Kind: Kind, Name: "web"}})
	if err != nil || len(rows) != 1 || rows[0].Requests != 40 {
		t.Errorf("stat books-v2 --from web = %+v, %v", rows, err)
	}
	routes, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "books-v1"}})
	if err != nil || len(routes) != 1 || routes[0].Route != "[default]" || routes[0].Authority != "books.demo:80" || routes[0].Requests != 60 {
		t.Errorf("routes = %+v, %v", routes, err)
	}
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	url := srv.URL + "/metrics"
	srv.Close()
	src := &Source{Targets: []Target{{Resource: model.Resource{Kind: Kind, Name: "web"}, MetricsURL: url}}, Sample: time.Millisecond}
	if _, err := src.Stat(context.Background(), model.Query{}); err == nil {
		t.Fatal("no error with every proxy down")
	}
}

// Outbound route rows come from the client proxy's trellis_route_*
// series over the window: per service, route, rule and backend, 5xx a
// failure, cancelled requests not counted; --to svc/NAME narrows them,
// --from has none.
func TestRoutesOutbound(t *testing.T) {
	web, webURL := newProxyMetrics(t)
	const split, svc = "demo/books-split", "books.demo:80"
	web.route(split, "1", svc, "books-v1.demo:80", "2xx", 30, 0.005) // before the window
	now := time.Unix(1000, 0)
	src := &Source{Targets: []Target{{Resource: model.Resource{Kind: Kind, Name: "web"}, Identity: idWeb, MetricsURL: webURL}},
		Sample: time.Millisecond, Now: func() time.Time { return now }}
	ctx := context.Background()
	if _, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: Kind}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	web.route(split, "1", svc, "books-v1.demo:80", "2xx", 81, 0.005)
	web.route(split, "1", svc, "books-v1.demo:80", "5xx", 9, 0.005)
	web.route(split, "1", svc, "books-v1.demo:80", "cancelled", 4, 0.005)
	web.route(split, "1", svc, "books-v2.demo:80", "2xx", 10, 0.05)
	web.route("demo/ratings", "0", "ratings.demo:80", "ratings.demo:80", "4xx", 5, 0.005)

	rows, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "web"}, Window: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		svc, route, rule, backend string
		req, sr                   float64
	}
	want := []row{
		{svc, split, "1", "books-v1.demo:80", 90, 0.9},
		{svc, split, "1", "books-v2.demo:80", 10, 1},
		{"ratings.demo:80", "demo/ratings", "0", "ratings.demo:80", 5, 1},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows = %+v, want %d outbound route rows", rows, len(want))
	}
	for i, w := range want {
		r := rows[i]
		got := row{r.Authority, r.Route, r.Rule, r.Backend, r.Requests, -1}
		if r.SuccessRate != nil {
			got.sr = *r.SuccessRate
		}
		if got != w || r.Direction != model.DirectionOutbound || r.Resource.Name != "web" || math.Abs(r.RPS-w.req/10) > 1e-9 {
			t.Errorf("row %d = %+v (rps %v), want %+v", i, r, r.RPS, w)
		}
	}
	if p50 := rows[1].P50Ms; p50 == nil || *p50 <= 10 || *p50 > 100 {
		t.Errorf("books-v2 p50 = %v ms, want in (10, 100]", p50)
	}
	rows, err = src.Routes(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "web"}, To: model.Resource{Kind: "services", Name: "ratings"}})
	if err != nil || len(rows) != 1 || rows[0].Route != "demo/ratings" {
		t.Errorf("--to svc/ratings: %+v, %v; want the ratings route only", rows, err)
	}
	rows, err = src.Routes(ctx, model.Query{Resource: model.Resource{Kind: Kind, Name: "web"}, From: model.Resource{Kind: Kind, Name: "web"}})
	if err != nil || len(rows) != 0 {
		t.Errorf("--from: %+v, %v; want no route rows (the route metrics carry no peer)", rows, err)
	}
}
