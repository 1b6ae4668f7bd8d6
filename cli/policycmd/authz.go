package policycmd

import (
	"maps"
	"slices"
	"strings"
)

// Row is what one workload's server (and route) decided over a window.
type Row struct {
	Workload string   `json:"workload"`
	Server   string   `json:"server"`
	Route    string   `json:"route,omitempty"`
	Policies []string `json:"policies"`
	Allowed  float64  `json:"allowed"`
	Denied   float64  `json:"denied"`
	Audited  float64  `json:"audited"`
	// DenyReasons counts denials by reason.
	DenyReasons map[string]float64 `json:"denyReasons,omitempty"`
}

type rowKey struct{ workload, server, route string }

// Table folds the samples of pods (deltas over the window) into one row
// per workload (service account), server and route, sorted. The policies
// of a row are the authorizations that allowed its calls.
func Table(pods []Pod) []Row {
	rows := map[rowKey]*Row{}
	pol := map[rowKey]map[string]bool{}
	for _, p := range pods {
		for _, s := range p.Samples {
			k := rowKey{p.ServiceAccount, s.Server, s.Route}
			r := rows[k]
			if r == nil {
				r = &Row{Workload: k.workload, Server: k.server, Route: k.route}
				rows[k], pol[k] = r, map[string]bool{}
			}
			switch s.Decision {
			case Allow:
				r.Allowed += s.Count
				if s.Authz != "" {
					pol[k][s.Authz] = true
				}
			case Deny:
				r.Denied += s.Count
				if r.DenyReasons == nil {
					r.DenyReasons = map[string]float64{}
				}
				r.DenyReasons[s.Reason] += s.Count
			case Audit:
				r.Audited += s.Count
			}
		}
	}
	out := make([]Row, 0, len(rows))
	for k, r := range rows {
		r.Policies = append([]string{}, slices.Sorted(maps.Keys(pol[k]))...)
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		return strings.Compare(a.Workload+"\x00"+a.Server+"\x00"+a.Route, b.Workload+"\x00"+b.Server+"\x00"+b.Route)
	})
	return out
}
