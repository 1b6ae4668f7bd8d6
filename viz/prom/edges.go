package prom

import (
	"context"

	"github.com/trellis-mesh/trellis/viz/model"
)

// Edges answers `trellis edges`: the clients' outbound series, one edge per
// source workload, destination authority, serving identity and TLS. The
// source is q.Resource (Kind "" = every workload); q.To narrows the
// destinations.
func (s *Source) Edges(ctx context.Context, q model.Query) ([]model.Edge, error) {
	src := q.Resource
	if src.Kind == "" {
		src.Kind = "deployments"
	}
	k, err := keyingOf(src)
	if err != nil {
		return nil, err
	}
	if q.Resource.Kind == "" {
		// Every workload kind: match on the presence of an owner only.
		k.sel = k.sel[:len(k.sel)-1]
	}
	sel := append(append([]string(nil), k.sel...), eq("direction", "outbound"))
	if q.To.Kind != "" {
		dir, err := s.direction(ctx, model.Query{To: q.To})
		if err != nil {
			return nil, err
		}
		sel = append(sel, dir[1:]...)
	}
	srcBy := []string{LabelNamespace, LabelPod, LabelWorkloadKind, LabelWorkload, LabelIdentity}
	if src.Kind != "pods" {
		srcBy = []string{LabelNamespace, LabelWorkloadKind, LabelWorkload, LabelIdentity}
	}
	t := newTable(append(srcBy, "dst_service", "peer_identity", "tls"))
	if err := s.fillGolden(ctx, t, sel, window(q)); err != nil {
		return nil, err
	}
	dst, err := s.destinations(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]model.Edge, 0, len(t.rows))
	for _, r := range t.sorted() {
		if r.Requests == 0 && r.RPS == 0 {
			continue // an edge with no request in the window
		}
		peer := string(r.labels["peer_identity"])
		srcRes := workloadOf(r.labels)
		if src.Kind == "pods" {
			srcRes = model.Resource{Kind: "pods", Namespace: string(r.labels[LabelNamespace]), Name: string(r.labels[LabelPod])}
		}
		out = append(out, model.Edge{
			Src:         srcRes,
			Dst:         dst.resolve(string(r.labels["dst_service"]), peer, string(r.labels[LabelNamespace])),
			SrcIdentity: string(r.labels[LabelIdentity]),
			DstIdentity: peer,
			MTLS:        r.labels["tls"] == "true" && peer != "",
			Golden:      r.Golden,
		})
	}
	return out, nil
}

// destIndex resolves an edge's destination to a workload: the workloads
// whose pods have the serving identity and that received requests for the
// authority.
type destIndex struct {
	byIdentity  map[string][]model.Resource
	byAuthority map[string]map[model.Resource]bool
}

func (s *Source) destinations(ctx context.Context) (destIndex, error) {
	idx := destIndex{byIdentity: map[string][]model.Resource{}, byAuthority: map[string]map[model.Resource]bool{}}
	wl := []string{LabelNamespace, LabelWorkloadKind, LabelWorkload, LabelPod}
	vec, err := s.C.Query(ctx, ColIdentities.Fill([]string{eq("job", ProxyJob)}, append(wl, LabelIdentity), 0))
	if err != nil {
		return idx, err
	}
	seen := map[string]map[model.Resource]bool{}
	for _, smp := range vec {
		id, w := string(smp.Metric[LabelIdentity]), workloadOf(smp.Metric)
		if seen[id] == nil {
			seen[id] = map[model.Resource]bool{}
		}
		if !seen[id][w] {
			seen[id][w] = true
			idx.byIdentity[id] = append(idx.byIdentity[id], w)
		}
	}
	// The authorities each workload served, from its inbound responses.
	vec, err = s.C.Query(ctx, `group by (namespace, workload_kind, workload, pod, dst_service) (trellis_responses_total{job="`+ProxyJob+`",direction="inbound"})`)
	if err != nil {
		return idx, err
	}
	for _, smp := range vec {
		a := string(smp.Metric["dst_service"])
		if idx.byAuthority[a] == nil {
			idx.byAuthority[a] = map[model.Resource]bool{}
		}
		idx.byAuthority[a][workloadOf(smp.Metric)] = true
	}
	return idx, nil
}

// resolve names the destination workload when exactly one workload fits,
// else the Service the authority names.
func (d destIndex) resolve(authority, peer, clientNS string) model.Resource {
	cands := d.byIdentity[peer]
	if len(cands) > 1 {
		var served []model.Resource
		for _, c := range cands {
			if d.byAuthority[authority][c] {
				served = append(served, c)
			}
		}
		cands = served
	}
	if peer != "" && len(cands) == 1 {
		return cands[0]
	}
	return ServiceOf(authority, clientNS)
}
