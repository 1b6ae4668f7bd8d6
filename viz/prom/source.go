package prom

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
)

// DefaultWindow is the window of a Query that names none.
const DefaultWindow = time.Minute

// PodCounter counts every pod (meshed or not) of the resources a query
// covers, keyed by resource: Prometheus only knows the meshed ones. The
// CLI's implementation lists pods through the Kubernetes API.
type PodCounter func(ctx context.Context, q model.Query) (map[model.Resource]int, error)

// Source is the model.Source over Prometheus.
type Source struct {
	C *Client
	// Pods, when set, gives TotalPods (and rows for resources with no
	// meshed pod); otherwise TotalPods is MeshedPods.
	Pods PodCounter
}

var _ model.Source = (*Source)(nil)

// noMatch is a peer_identity no proxy writes: a filter on a resource with
// no known identity selects nothing.
const noMatch = "(no identity)"

func window(q model.Query) time.Duration {
	if q.Window <= 0 {
		return DefaultWindow
	}
	return q.Window
}

// direction returns the direction and extra matchers of q's From/To: to a
// resource is the rows' outbound traffic, from a resource their inbound
// traffic, otherwise all their inbound traffic.
func (s *Source) direction(ctx context.Context, q model.Query) ([]string, error) {
	switch {
	case q.From.Kind != "" && q.To.Kind != "":
		return nil, fmt.Errorf("--from and --to: give one of them")
	case q.To.Kind == "services":
		return []string{eq("direction", "outbound"), authorityMatcher(q.To)}, nil
	case q.To.Kind != "":
		ids, err := s.identities(ctx, q.To)
		if err != nil {
			return nil, err
		}
		return []string{eq("direction", "outbound"), oneOf("peer_identity", ids)}, nil
	case q.From.Kind == "services":
		return nil, fmt.Errorf("--from %s: a service sends nothing; give the workload that calls", q.From.Kind)
	case q.From.Kind != "":
		ids, err := s.identities(ctx, q.From)
		if err != nil {
			return nil, err
		}
		return []string{eq("direction", "inbound"), oneOf("peer_identity", ids)}, nil
	}
	return []string{eq("direction", "inbound")}, nil
}

// authorityMatcher matches the authorities clients use for a service:
// name, name.ns, name.ns.svc..., with or without a port.
func authorityMatcher(svc model.Resource) string { return authorityMatcherOn("dst_service", svc) }

// authorityMatcherOn is authorityMatcher on the label holding the
// authority.
func authorityMatcherOn(label string, svc model.Resource) string {
	re := regexp.QuoteMeta(svc.Name)
	if svc.Namespace != "" {
		re += `(\.` + regexp.QuoteMeta(svc.Namespace) + `(\..+)?)?`
	} else {
		re += `(\..+)?`
	}
	return label + "=~" + quote(re+`(:[0-9]+)?`)
}

// identities are the SPIFFE IDs of the pods of r that Prometheus scrapes.
func (s *Source) identities(ctx context.Context, r model.Resource) ([]string, error) {
	k, err := keyingOf(r)
	if err != nil {
		return nil, err
	}
	vec, err := s.C.Query(ctx, ColIdentities.Fill(k.sel, []string{LabelIdentity}, 0))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, smp := range vec {
		if id := string(smp.Metric[LabelIdentity]); id != "" {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		ids = []string{noMatch}
	}
	sort.Strings(ids)
	return ids, nil
}

// selection is the keying of q's resource and the matchers of its rows'
// traffic (resource, direction, From/To).
func (s *Source) selection(ctx context.Context, q model.Query) (keying, []string, error) {
	k, err := keyingOf(q.Resource)
	if err != nil {
		return k, nil, err
	}
	dir, err := s.direction(ctx, q)
	if err != nil {
		return k, nil, err
	}
	return k, append(append([]string(nil), k.sel...), dir...), nil
}

// Stat answers `trellis stat`.
func (s *Source) Stat(ctx context.Context, q model.Query) ([]model.WorkloadStat, error) {
	if q.Resource.Kind == "services" {
		return s.statServices(ctx, q)
	}
	k, sel, err := s.selection(ctx, q)
	if err != nil {
		return nil, err
	}
	t := newTable(k.by)
	if err := s.fillMeshed(ctx, t, k.sel); err != nil {
		return nil, err
	}
	if err := s.fillGolden(ctx, t, sel, window(q)); err != nil {
		return nil, err
	}
	out := make([]model.WorkloadStat, 0, len(t.rows))
	for _, r := range t.sorted() {
		out = append(out, model.WorkloadStat{
			Resource:   resourceOf(q.Resource.Kind, r.labels),
			MeshedPods: r.meshed, TotalPods: r.meshed, Golden: r.Golden,
		})
	}
	return s.withTotals(ctx, q, out)
}

// withTotals sets TotalPods from s.Pods and adds the resources that have
// no meshed pod.
func (s *Source) withTotals(ctx context.Context, q model.Query, rows []model.WorkloadStat) ([]model.WorkloadStat, error) {
	if s.Pods == nil {
		return rows, nil
	}
	total, err := s.Pods(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("count pods: %w", err)
	}
	seen := map[model.Resource]bool{}
	for i := range rows {
		seen[rows[i].Resource] = true
		if n, ok := total[rows[i].Resource]; ok {
			rows[i].TotalPods = n
		}
	}
	for r, n := range total {
		if !seen[r] {
			rows = append(rows, model.WorkloadStat{Resource: r, TotalPods: n})
		}
	}
	SortStats(rows)
	return rows, nil
}

// SortStats orders rows by namespace then name.
func SortStats(rows []model.WorkloadStat) {
	sort.SliceStable(rows, func(i, j int) bool {
		a, b := rows[i].Resource, rows[j].Resource
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

// statServices are the services' rows: what their clients sent them
// (outbound series, keyed by the authority the clients named).
func (s *Source) statServices(ctx context.Context, q model.Query) ([]model.WorkloadStat, error) {
	if q.From.Kind != "" || q.To.Kind != "" {
		return nil, fmt.Errorf("stat services: --from/--to are for workloads, pods and namespaces")
	}
	by := []string{LabelNamespace, "dst_service"}
	t := newTable(by)
	sel := []string{eq("job", ProxyJob), eq("direction", "outbound")}
	if err := s.fillGolden(ctx, t, sel, window(q)); err != nil {
		return nil, err
	}
	merged := map[model.Resource]model.Golden{}
	for _, r := range t.sorted() {
		svc := ServiceOf(string(r.labels["dst_service"]), string(r.labels[LabelNamespace]))
		if (q.Resource.Namespace != "" && svc.Namespace != q.Resource.Namespace) || (q.Resource.Name != "" && svc.Name != q.Resource.Name) {
			continue
		}
		merged[svc] = merge(merged[svc], r.Golden)
	}
	out := make([]model.WorkloadStat, 0, len(merged))
	for svc, g := range merged {
		out = append(out, model.WorkloadStat{Resource: svc, Golden: g})
	}
	SortStats(out)
	return out, nil
}
