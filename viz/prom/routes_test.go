package prom

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	proxymetrics "github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/viz/grafana"
	"github.com/trellis-mesh/trellis/viz/model"
)

// routeLoad records requests in a real proxy's route metrics at a steady
// rate until ctx ends: every tick it catches up to perSecond*elapsed, so
// Prometheus's rate() of the series is perSecond. One request of every
// failOf (0: none) is a 503; cancelled adds as many cancelled requests,
// which no figure may count.
type routeLoad struct {
	key       proxymetrics.RouteKey
	perSecond float64
	failOf    int
	latency   float64 // seconds, every request
	cancelled bool
}

func runRouteLoad(ctx context.Context, wg *sync.WaitGroup, r *proxymetrics.Routes, loads []routeLoad) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		done := make([]int, len(loads))
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			elapsed := time.Since(start).Seconds()
			for i, l := range loads {
				for ; float64(done[i]) < l.perSecond*elapsed; done[i]++ {
					k := l.key
					k.Class = "2xx"
					if l.failOf > 0 && done[i]%l.failOf == 0 {
						k.Class = proxymetrics.StatusClass(503)
					}
					r.Request(k, l.latency)
					if l.cancelled {
						k.Class = proxymetrics.ClassCancelled
						r.Request(k, 30)
					}
				}
			}
		}
	}()
}

// TestRoutesAgainstPrometheus: a real Prometheus scrapes the real route
// metrics of two clients' proxies (web and loadgen) that a canary route
// of books splits; `trellis routes` shows each client's outbound routes
// per service, route, rule and backend, books' inbound traffic, and the
// service's routes as all its clients matched them.
func TestRoutesAgainstPrometheus(t *testing.T) {
	const (
		books  = "books.demo.svc.cluster.local:80"
		v1, v2 = "books-v1.demo.svc.cluster.local:80", "books-v2.demo.svc.cluster.local:80"
		split  = "demo/books-split"
	)
	key := func(rule, backend string) proxymetrics.RouteKey {
		return proxymetrics.RouteKey{Route: split, Rule: rule, Direction: proxymetrics.Outbound, Service: books, DstService: backend}
	}
	webReg, lgReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	webRoutes, err := proxymetrics.NewRoutes(webReg)
	if err != nil {
		t.Fatal(err)
	}
	lgRoutes, err := proxymetrics.NewRoutes(lgReg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	runRouteLoad(ctx, &wg, webRoutes, []routeLoad{
		{key: key("0", v1), perSecond: 18, latency: 0.004, cancelled: true},
		{key: key("0", v2), perSecond: 4, failOf: 4, latency: 0.04},
		{key: key("1", books), perSecond: 2, latency: 0.004},
	})
	runRouteLoad(ctx, &wg, lgRoutes, []routeLoad{{key: key("0", v1), perSecond: 10, latency: 0.004}})
	c := startPrometheus(t, []target{
		{labels: pod("demo", "web-1", "deployment", "web", idWeb), reg: webReg},
		{labels: pod("demo", "loadgen-1", "deployment", "loadgen", "spiffe://cluster.local/ns/demo/sa/loadgen"), reg: lgReg},
		{labels: pod("demo", "books-1", "deployment", "books", idBooks), series: []*linear{newLinear(dir("inbound", books, idWeb), 12, 10, 0.01)}},
	})
	src := &Source{C: c}
	const win = 5 * time.Second
	web := model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}
	rows := waitRoutes(t, src, model.Query{Resource: web, Window: win}, 3, win)

	// web's outbound routes: one row per rule and backend.
	want := []struct {
		rule, backend string
		rps, success  float64
		p50Lo, p50Hi  float64 // ms: the bucket the latency is in
	}{
		{"0", v1, 18, 1, 2.5, 5},
		{"0", v2, 4, 0.75, 25, 50},
		{"1", books, 2, 1, 2.5, 5},
	}
	for i, w := range want {
		r := rows[i]
		if r.Resource != web || r.Direction != model.DirectionOutbound || r.Route != split || r.Authority != books || r.Rule != w.rule || r.Backend != w.backend {
			t.Errorf("row %d: %+v, want rule %s backend %s of %s", i, r, w.rule, w.backend, split)
			continue
		}
		if !within(r.RPS, w.rps, 0.15) || r.SuccessRate == nil || !within(*r.SuccessRate, w.success, 0.05) ||
			r.P50Ms == nil || *r.P50Ms <= w.p50Lo || *r.P50Ms > w.p50Hi || r.P99Ms == nil || *r.P99Ms > w.p50Hi {
			t.Errorf("%s rule %s -> %s: rps %.2f (want %g) success %v (want %g) p50 %v p99 %v (want in (%g, %g] ms)",
				r.Route, r.Rule, r.Backend, r.RPS, w.rps, deref(r.SuccessRate), w.success, deref(r.P50Ms), deref(r.P99Ms), w.p50Lo, w.p50Hi)
		}
	}

	// --to svc/books keeps them; --to svc/authors and --to a workload
	// (the route metrics carry no peer identity) have none.
	for _, tc := range []struct {
		to   model.Resource
		want int
	}{
		{model.Resource{Kind: "services", Namespace: "demo", Name: "books"}, 3},
		{model.Resource{Kind: "services", Namespace: "demo", Name: "authors"}, 0},
		{model.Resource{Kind: "deployments", Namespace: "demo", Name: "books"}, 0},
	} {
		got, err := src.Routes(ctx, model.Query{Resource: web, To: tc.to, Window: win})
		if n := countRoutes(got, model.DirectionOutbound, split); err != nil || n != tc.want {
			t.Errorf("routes web --to %s/%s: %d route rows, want %d: %+v %v", tc.to.Kind, tc.to.Name, n, tc.want, got, err)
		}
	}

	// books serves: one inbound row, no route (routes are the client's).
	got, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: "deployments", Namespace: "demo", Name: "books"}, Window: win})
	if err != nil || len(got) != 1 || got[0].Direction != model.DirectionInbound || got[0].Route != DefaultRoute || got[0].Authority != books || !within(got[0].RPS, 12, 0.15) {
		t.Errorf("routes books: %+v %v", got, err)
	}

	// The service's routes: web's and loadgen's v1 requests merged.
	got, err = src.Routes(ctx, model.Query{Resource: model.Resource{Kind: "services", Namespace: "demo"}, Window: win})
	if err != nil || len(got) != 3 {
		t.Fatalf("routes svc: %+v %v", got, err)
	}
	svc := model.Resource{Kind: "services", Namespace: "demo", Name: "books"}
	for i, w := range []struct {
		backend string
		rps     float64
	}{{v1, 28}, {v2, 4}, {books, 2}} {
		if r := got[i]; r.Resource != svc || r.Backend != w.backend || r.Direction != model.DirectionOutbound || !within(r.RPS, w.rps, 0.15) {
			t.Errorf("routes svc row %d: %+v, want %s at %g rps", i, r, w.backend, w.rps)
		}
	}
	if got, err := src.Routes(ctx, model.Query{Resource: model.Resource{Kind: "services", Namespace: "demo", Name: "authors"}, Window: win}); err != nil || len(got) != 0 {
		t.Errorf("routes svc/authors: %+v %v", got, err)
	}

	// The Grafana dashboard Trellis / Route's outbound route panels, on the
	// same series: one series per rule and backend of books' route.
	res, err := grafana.Check(ctx, http.DefaultClient, c.URL(), map[string]string{
		"$__rate_interval": "10s", "$namespace": ".*", "$workload": ".*", "$dst_service": books})
	if err != nil {
		t.Fatal(err)
	}
	panels := 0
	for _, r := range res {
		if r.Dashboard != "trellis-route" || !strings.HasPrefix(r.Panel, "Outbound routes:") {
			continue
		}
		panels++
		if r.Err != nil || r.Series != 3 {
			t.Errorf("grafana %s (%s): %d series, want 3 (one per rule and backend): %v\n%s", r.Panel, r.RefID, r.Series, r.Err, r.Expr)
		}
	}
	if panels != 5 {
		t.Errorf("%d outbound route targets in the Grafana route dashboard, want 5", panels)
	}

	// Every route column runs (the expressions docs/observability.md shows).
	for _, col := range RouteColumns {
		if _, err := c.Query(ctx, col.Fill([]string{eq("job", ProxyJob)}, RouteLabels, time.Minute)); err != nil {
			t.Errorf("%s: %v", col.Name, err)
		}
	}
}

// waitRoutes waits until q has n outbound route rows with rates over two
// windows of scrapes (rate() needs two samples in the window).
func waitRoutes(t *testing.T, src *Source, q model.Query, n int, win time.Duration) []model.RouteStat {
	t.Helper()
	start := time.Now()
	for {
		rows, err := src.Routes(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if countRoutes(rows, model.DirectionOutbound, "") == n && rows[0].P50Ms != nil && time.Since(start) > 2*win+2*time.Second {
			t.Logf("route rates after %s", time.Since(start).Round(time.Millisecond))
			return rows
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("no route rates after 60 s: %+v", rows)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func countRoutes(rows []model.RouteStat, dir, route string) int {
	n := 0
	for _, r := range rows {
		if r.Direction == dir && (route == "" || strings.EqualFold(r.Route, route)) && r.Route != DefaultRoute {
			n++
		}
	}
	return n
}
