package prom

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/trellis-mesh/trellis/viz/model"
)

// DefaultRoute is the route of rows from the HTTP metrics, which carry no
// route: inbound (routes are applied by the client's proxy) and, with
// --to, every request to the authority.
const DefaultRoute = "[default]"

// Routes answers `trellis routes`: per resource, the traffic it served
// (inbound, or with q.To what it sent there) by authority, and the
// outbound routes its proxy matched by service, route, rule and backend
// (the trellis_route_* series). For services, the outbound routes of every
// client calling them.
func (s *Source) Routes(ctx context.Context, q model.Query) ([]model.RouteStat, error) {
	if q.Resource.Kind == "services" {
		return s.serviceRoutes(ctx, q)
	}
	k, sel, err := s.selection(ctx, q)
	if err != nil {
		return nil, err
	}
	t := newTable(append(append([]string(nil), k.by...), "dst_service"))
	if err := s.fillGolden(ctx, t, sel, window(q)); err != nil {
		return nil, err
	}
	dir := model.DirectionInbound
	if q.To.Kind != "" {
		dir = model.DirectionOutbound
	}
	out := make([]model.RouteStat, 0, len(t.rows))
	for _, r := range t.sorted() {
		out = append(out, model.RouteStat{
			Resource: resourceOf(q.Resource.Kind, r.labels), Direction: dir, Route: DefaultRoute,
			Authority: string(r.labels["dst_service"]), Golden: r.Golden,
		})
	}
	routeSel, ok := outboundRouteSel(k.sel, q)
	if !ok {
		return out, nil
	}
	rt := newTable(append(append([]string(nil), k.by...), RouteLabels...))
	if err := s.fillColumns(ctx, rt, RouteColumns, routeSel, window(q)); err != nil {
		return nil, err
	}
	for _, r := range rt.sorted() {
		out = append(out, routeRow(resourceOf(q.Resource.Kind, r.labels), r))
	}
	return out, nil
}

// outboundRouteSel is the selection of the outbound route rows of q: its
// resource's, narrowed by --to svc/NAME to the routes of that service.
// The route metrics carry no peer identity: with --from (inbound) or --to
// a workload there are none.
func outboundRouteSel(resource []string, q model.Query) ([]string, bool) {
	sel := append(append([]string(nil), resource...), eq("direction", model.DirectionOutbound))
	switch {
	case q.From.Kind != "":
		return nil, false
	case q.To.Kind == "services":
		return append(sel, authorityMatcherOn("service", q.To)), true
	case q.To.Kind != "":
		return nil, false
	}
	return sel, true
}

func routeRow(res model.Resource, r *row) model.RouteStat {
	return model.RouteStat{
		Resource: res, Direction: model.DirectionOutbound,
		Route: string(r.labels["route"]), Rule: string(r.labels["rule"]),
		Authority: string(r.labels["service"]), Backend: string(r.labels["dst_service"]),
		Golden: r.Golden,
	}
}

// serviceRoutes are the routes of services as their clients' proxies
// matched them: rows of every client calling the same authority are
// merged (their quantiles are the busiest client's).
func (s *Source) serviceRoutes(ctx context.Context, q model.Query) ([]model.RouteStat, error) {
	if q.From.Kind != "" || q.To.Kind != "" {
		return nil, fmt.Errorf("routes services: --from/--to are for workloads, pods and namespaces")
	}
	t := newTable(append([]string{LabelNamespace}, RouteLabels...))
	sel := []string{eq("job", ProxyJob), eq("direction", model.DirectionOutbound)}
	if err := s.fillColumns(ctx, t, RouteColumns, sel, window(q)); err != nil {
		return nil, err
	}
	merged := map[string]*model.RouteStat{}
	for _, r := range t.sorted() {
		svc := ServiceOf(string(r.labels["service"]), string(r.labels[LabelNamespace]))
		if (q.Resource.Namespace != "" && svc.Namespace != q.Resource.Namespace) || (q.Resource.Name != "" && svc.Name != q.Resource.Name) {
			continue
		}
		row := routeRow(svc, r)
		key := strings.Join([]string{svc.Namespace, svc.Name, row.Authority, row.Route, row.Rule, row.Backend}, "\x00")
		if m, ok := merged[key]; ok {
			m.Golden = merge(m.Golden, row.Golden)
			continue
		}
		merged[key] = &row
	}
	out := make([]model.RouteStat, 0, len(merged))
	for _, r := range merged {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool { return routeKey(out[i]) < routeKey(out[j]) })
	return out, nil
}

func routeKey(r model.RouteStat) string {
	return strings.Join([]string{r.Resource.Namespace, r.Resource.Name, r.Authority, r.Route, r.Rule, r.Backend}, "\x00")
}
