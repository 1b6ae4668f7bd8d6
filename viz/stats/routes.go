package stats

import (
	"fmt"
	"io"
	"math"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Route metric names (docs/metrics.md#routes): the client's proxy counts
// the outbound requests a route matched.
const (
	RouteRequestsMetric = "trellis_route_requests_total"
	RouteLatencyMetric  = "trellis_route_response_latency_seconds"
)

// RouteKey is one rule of a route as one client's proxy applied it: the
// authority the client named (the route's parent), the route, the rule's
// index and the backend the rule picked.
type RouteKey struct {
	Service, Route, Rule, Backend string
}

// Routes is what each route rule's requests accumulated. A success is a
// status class other than 5xx and 0xx (no response), as the Kubernetes
// views count it (the route metrics carry no gRPC status); cancelled
// requests are neither.
type Routes map[RouteKey]*Counts

// Scrape is one proxy's exposition read once: the per-destination
// figures and the per-route ones.
type Scrape struct {
	Snapshot Snapshot
	Routes   Routes
}

// ParseScrape reads Prometheus text exposition format into both.
func ParseScrape(r io.Reader) (Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return Scrape{}, fmt.Errorf("parse metrics: %w", err)
	}
	return Scrape{Snapshot: FromFamilies(fams), Routes: RoutesFromFamilies(fams)}, nil
}

// RoutesFromFamilies folds the outbound route series into Routes.
func RoutesFromFamilies(fams map[string]*dto.MetricFamily) Routes {
	rs := Routes{}
	counts := func(m *dto.Metric) *Counts {
		k := RouteKey{Service: label(m, "service"), Route: label(m, "route"), Rule: label(m, "rule"), Backend: label(m, "dst_service")}
		if rs[k] == nil {
			rs[k] = &Counts{}
		}
		return rs[k]
	}
	for _, m := range fams[RouteRequestsMetric].GetMetric() {
		v := counterValue(m)
		class := label(m, "status_class")
		if label(m, "direction") != Outbound || class == "cancelled" || math.IsNaN(v) || v < 0 {
			continue
		}
		if c := counts(m); class == "5xx" || class == "0xx" {
			c.Failure += v
		} else {
			c.Success += v
		}
	}
	for _, m := range fams[RouteLatencyMetric].GetMetric() {
		if h := m.GetHistogram(); h != nil && label(m, "direction") == Outbound {
			counts(m).Latency.add(fromProto(h))
		}
	}
	return rs
}

// Sub returns what happened between prev and r (see Snapshot.Sub).
func (r Routes) Sub(prev Routes) Routes { return sub(r, prev) }
