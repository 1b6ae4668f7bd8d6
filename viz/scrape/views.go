package scrape

import (
	"context"
	"fmt"
	"math"
	"sort"

	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
	"github.com/trellis-mesh/trellis/viz/stats"
)

// golden reads the figures of c over seconds; figures without requests
// are nil.
func golden(c stats.Counts, seconds float64) model.Golden {
	g := model.Golden{Requests: c.Requests()}
	if seconds > 0 {
		g.RPS = g.Requests / seconds
	}
	g.SuccessRate = finite(c.SuccessRate(), 1)
	g.P50Ms = finite(c.Quantile(0.5), 1000)
	g.P95Ms = finite(c.Quantile(0.95), 1000)
	g.P99Ms = finite(c.Quantile(0.99), 1000)
	return g
}

func finite(v, scale float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	v *= scale
	return &v
}

// filter is which keys of a proxy's snapshot a view counts.
type filter func(stats.Key) bool

// keyFilter is the filter of q's From/To (inbound traffic by default).
func (s *Source) keyFilter(q model.Query) (filter, error) {
	switch {
	case q.From.Kind != "" && q.To.Kind != "":
		return nil, fmt.Errorf("--from and --to: give one of them")
	case q.To.Kind == "services":
		return func(k stats.Key) bool {
			svc := prom.ServiceOf(k.DstService, "")
			return k.Direction == stats.Outbound && svc.Name == q.To.Name
		}, nil
	case q.To.Kind != "":
		ids, err := s.identities(q.To)
		if err != nil {
			return nil, err
		}
		return func(k stats.Key) bool { return k.Direction == stats.Outbound && ids[k.PeerIdentity] }, nil
	case q.From.Kind != "":
		ids, err := s.identities(q.From)
		if err != nil {
			return nil, err
		}
		return func(k stats.Key) bool { return k.Direction == stats.Inbound && ids[k.PeerIdentity] }, nil
	}
	return func(k stats.Key) bool { return k.Direction == stats.Inbound }, nil
}

func (s *Source) identities(r model.Resource) (map[string]bool, error) {
	if r.Kind != Kind {
		return nil, fmt.Errorf("%s/%s: local mode knows %s only", r.Kind, r.Name, Kind)
	}
	ids := map[string]bool{}
	for _, t := range s.Targets {
		if t.Resource.Name == r.Name {
			ids[t.Identity] = true
		}
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s/%s: no such workload", r.Kind, r.Name)
	}
	return ids, nil
}

// filtered is q's key filter and the change over its window.
func (s *Source) filtered(ctx context.Context, q model.Query) (filter, window, error) {
	keep, err := s.keyFilter(q)
	if err != nil {
		return nil, window{}, err
	}
	w, err := s.window(ctx, q.Window)
	return keep, w, err
}

func sum(snap stats.Snapshot, keep filter) stats.Counts {
	var c stats.Counts
	for k, v := range snap {
		if keep(k) {
			c.Add(*v)
		}
	}
	return c
}

func (s *Source) selected(r model.Resource, t Target) bool {
	return r.Name == "" || r.Name == t.Resource.Name
}

// Stat answers `trellis stat` for workloads (Kind "workloads") and
// services (what clients sent them).
func (s *Source) Stat(ctx context.Context, q model.Query) ([]model.WorkloadStat, error) {
	switch q.Resource.Kind {
	case Kind, "":
	case "services":
		return s.statServices(ctx, q)
	default:
		return nil, fmt.Errorf("resource kind %q: local mode answers for %s and services", q.Resource.Kind, Kind)
	}
	keep, w, err := s.filtered(ctx, q)
	if err != nil {
		return nil, err
	}
	var out []model.WorkloadStat
	for i, t := range s.Targets {
		if !s.selected(q.Resource, t) {
			continue
		}
		row := model.WorkloadStat{Resource: t.Resource}
		if w.delta[i] != nil {
			row.MeshedPods, row.TotalPods = 1, 1
			row.Golden = golden(sum(w.delta[i], keep), w.seconds)
		}
		out = append(out, row)
	}
	return out, nil
}

func (s *Source) statServices(ctx context.Context, q model.Query) ([]model.WorkloadStat, error) {
	w, err := s.window(ctx, q.Window)
	if err != nil {
		return nil, err
	}
	bySvc := map[string]*stats.Counts{}
	for i := range s.Targets {
		for k, v := range w.delta[i] {
			if k.Direction != stats.Outbound {
				continue
			}
			name := prom.ServiceOf(k.DstService, "").Name
			if q.Resource.Name != "" && name != q.Resource.Name {
				continue
			}
			if bySvc[name] == nil {
				bySvc[name] = &stats.Counts{}
			}
			bySvc[name].Add(*v)
		}
	}
	out := make([]model.WorkloadStat, 0, len(bySvc))
	for name, c := range bySvc {
		out = append(out, model.WorkloadStat{Resource: model.Resource{Kind: "services", Name: name}, Golden: golden(*c, w.seconds)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Resource.Name < out[j].Resource.Name })
	return out, nil
}

// Edges answers `trellis edges`: every source workload's outbound traffic
// by destination, serving identity and mTLS.
func (s *Source) Edges(ctx context.Context, q model.Query) ([]model.Edge, error) {
	keep := func(stats.Key) bool { return true }
	if q.To.Kind != "" {
		var err error
		if keep, err = s.keyFilter(model.Query{To: q.To}); err != nil {
			return nil, err
		}
	}
	w, err := s.window(ctx, q.Window)
	if err != nil {
		return nil, err
	}
	var out []model.Edge
	for i, t := range s.Targets {
		if w.delta[i] == nil || !s.selected(q.Resource, t) {
			continue
		}
		kept := stats.Snapshot{}
		for k, v := range w.delta[i] {
			if keep(k) {
				kept[k] = v
			}
		}
		for _, e := range kept.Edges() {
			if e.Requests() == 0 {
				continue
			}
			out = append(out, model.Edge{
				Src: t.Resource, Dst: s.resolve(w.cur, e.Destination, e.PeerIdentity),
				SrcIdentity: t.Identity, DstIdentity: e.PeerIdentity, MTLS: e.MTLS,
				Golden: golden(e.Counts, w.seconds),
			})
		}
	}
	return out, nil
}

// resolve is the one workload with the serving identity that served the
// authority, else the service the authority names.
func (s *Source) resolve(cur scrapeSet, authority, peer string) model.Resource {
	var cands []model.Resource
	for i, t := range s.Targets {
		if peer == "" || t.Identity != peer || cur.snaps[i] == nil {
			continue
		}
		for k := range cur.snaps[i] {
			if k.Direction == stats.Inbound && k.DstService == authority {
				cands = append(cands, t.Resource)
				break
			}
		}
	}
	if len(cands) == 1 {
		return cands[0]
	}
	return model.Resource{Kind: "services", Name: prom.ServiceOf(authority, "").Name}
}

// Routes answers `trellis routes`: each workload has one DefaultRoute per
// authority it served (or, with --to, sent to), then the outbound routes
// its proxy matched by service, route, rule and backend (the
// trellis_route_* series), as viz/prom does on Kubernetes.
func (s *Source) Routes(ctx context.Context, q model.Query) ([]model.RouteStat, error) {
	keep, w, err := s.filtered(ctx, q)
	if err != nil {
		return nil, err
	}
	dir := model.DirectionInbound
	if q.To.Kind != "" {
		dir = model.DirectionOutbound
	}
	var out []model.RouteStat
	for i, t := range s.Targets {
		if w.delta[i] == nil || !s.selected(q.Resource, t) {
			continue
		}
		byAuth := map[string]*stats.Counts{}
		for k, v := range w.delta[i] {
			if !keep(k) {
				continue
			}
			if byAuth[k.DstService] == nil {
				byAuth[k.DstService] = &stats.Counts{}
			}
			byAuth[k.DstService].Add(*v)
		}
		auths := make([]string, 0, len(byAuth))
		for a := range byAuth {
			auths = append(auths, a)
		}
		sort.Strings(auths)
		for _, a := range auths {
			out = append(out, model.RouteStat{Resource: t.Resource, Direction: dir, Route: prom.DefaultRoute, Authority: a, Golden: golden(*byAuth[a], w.seconds)})
		}
		out = append(out, routeRows(t.Resource, w.routes[i], q, w.seconds)...)
	}
	return out, nil
}

// routeRows are the outbound route rows of one proxy, narrowed by --to
// svc/NAME to that service's routes. The route metrics carry no peer
// identity: with --from, or --to a workload, there are none.
func routeRows(res model.Resource, rs stats.Routes, q model.Query, seconds float64) []model.RouteStat {
	if q.From.Kind != "" || (q.To.Kind != "" && q.To.Kind != "services") {
		return nil
	}
	keys := make([]stats.RouteKey, 0, len(rs))
	for k, c := range rs {
		if c.Requests() > 0 && (q.To.Kind == "" || prom.ServiceOf(k.Service, "").Name == q.To.Name) {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		return a.Service+"\x00"+a.Route+"\x00"+a.Rule+"\x00"+a.Backend < b.Service+"\x00"+b.Route+"\x00"+b.Rule+"\x00"+b.Backend
	})
	out := make([]model.RouteStat, 0, len(keys))
	for _, k := range keys {
		out = append(out, model.RouteStat{
			Resource: res, Direction: model.DirectionOutbound, Route: k.Route, Rule: k.Rule,
			Authority: k.Service, Backend: k.Backend, Golden: golden(*rs[k], seconds),
		})
	}
	return out
}
