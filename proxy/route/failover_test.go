package route

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// TestFailover: a rule splitting books 50/50 between the local service
// and the mirror of another cluster. While the mirror has no endpoints,
// its share goes to the local backend (counted); once it has some, the
// split is back; a backend the controller could not resolve keeps its
// share (500), and with no backend holding endpoints the pick stands.
func TestFailover(t *testing.T) {
	local, mirror := balance.New(), balance.New()
	local.Update([]balance.Endpoint{{Addr: "10.244.0.5:8080"}})
	bals := map[string]*balance.Balancer{"books.ns:80": local, "books-b.ns:80": mirror, "empty.ns:80": balance.New()}
	resolve := func(_ context.Context, a string) (bool, *balance.Balancer, error) {
		b, ok := bals[a]
		return ok, b, nil
	}
	split := func(backends ...*apiv1.WeightedBackend) Table {
		return table{"books.ns:80": mustCompile(t, &apiv1.Route{Name: "ns/split", Backends: backends})}
	}
	half := split(&apiv1.WeightedBackend{Authority: "books.ns:80", Weight: 50}, &apiv1.WeightedBackend{Authority: "books-b.ns:80", Weight: 50})
	reg := prometheus.NewRegistry()
	rm, err := metrics.NewRoutes(reg)
	if err != nil {
		t.Fatal(err)
	}
	run := func(tb Table, n int) (map[string]int, map[int]int) {
		var i uint64
		s := &Stage{Resolve: resolve, Table: tb, Metrics: rm, Rand: func() uint64 { i += 7; return i }}
		dst, errs := map[string]int{}, map[int]int{}
		for range n {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = "books.ns"
			x := &pipeline.Exchange{R: r}
			err := s.Layer(pipeline.HandlerFunc(func(*pipeline.Exchange) error { return nil })).Serve(x)
			var pe *proxyerr.Error
			switch {
			case errors.As(err, &pe):
				errs[pe.Status]++
			case err != nil:
				t.Fatal(err)
			default:
				dst[x.Dest.Dst]++
			}
		}
		return dst, errs
	}

	dst, errs := run(half, 1000)
	if dst["books.ns:80"] != 1000 || len(errs) != 0 {
		t.Errorf("mirror without endpoints: %v, errors %v; want all 1000 to the local backend", dst, errs)
	}
	if got := failovers(t, reg, "books-b.ns:80"); got < 400 {
		t.Errorf("failovers counted: %v, want about 500", got)
	}

	mirror.Update([]balance.Endpoint{{Addr: "10.245.0.5:8080"}})
	dst, _ = run(half, 1000)
	if dst["books-b.ns:80"] < 400 || dst["books.ns:80"] < 400 {
		t.Errorf("mirror back: %v, want about half each", dst)
	}

	// A backend the controller could not resolve is not a candidate and
	// keeps its share: answered 500, never moved to the empty one.
	mirror.Update(nil)
	dst, errs = run(split(&apiv1.WeightedBackend{Weight: 50}, &apiv1.WeightedBackend{Authority: "books-b.ns:80", Weight: 50}), 1000)
	if errs[http.StatusInternalServerError] < 400 || dst["books-b.ns:80"] < 400 {
		t.Errorf("unresolved and empty backends: %v, errors %v; want the 500s kept and the empty pick standing", dst, errs)
	}

	// Nothing anywhere: the pick stands.
	dst, _ = run(split(&apiv1.WeightedBackend{Authority: "empty.ns:80", Weight: 1}, &apiv1.WeightedBackend{Authority: "books-b.ns:80", Weight: 1}), 100)
	if dst["empty.ns:80"]+dst["books-b.ns:80"] != 100 || dst["empty.ns:80"] == 0 || dst["books-b.ns:80"] == 0 {
		t.Errorf("no backend with endpoints: %v, want the picks as drawn", dst)
	}
}

// failovers is trellis_route_failovers_total of route ns/split from from.
func failovers(t *testing.T, reg *prometheus.Registry, from string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_route_failovers_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == "ns/split" && labels["from"] == from {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
