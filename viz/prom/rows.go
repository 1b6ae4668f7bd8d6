package prom

import (
	"context"
	"math"
	"sort"
	"strings"
	"time"

	pmodel "github.com/prometheus/common/model"

	"github.com/trellis-mesh/trellis/viz/model"
)

// row is one group of series: its labels (those of `by`) and figures.
type row struct {
	labels pmodel.Metric
	model.Golden
	meshed int
}

// table is rows by the values of the grouping labels.
type table struct {
	by   []string
	rows map[string]*row
}

func newTable(by []string) *table { return &table{by: by, rows: map[string]*row{}} }

func (t *table) key(m pmodel.Metric) string {
	var b strings.Builder
	for _, l := range t.by {
		b.WriteString(string(m[pmodel.LabelName(l)]))
		b.WriteByte(0)
	}
	return b.String()
}

func (t *table) get(m pmodel.Metric) *row {
	k := t.key(m)
	r, ok := t.rows[k]
	if !ok {
		labels := pmodel.Metric{}
		for _, l := range t.by {
			labels[pmodel.LabelName(l)] = m[pmodel.LabelName(l)]
		}
		r = &row{labels: labels}
		t.rows[k] = r
	}
	return r
}

// sorted returns the rows in the order of their keys (stable output).
func (t *table) sorted() []*row {
	keys := make([]string, 0, len(t.rows))
	for k := range t.rows {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*row, len(keys))
	for i, k := range keys {
		out[i] = t.rows[k]
	}
	return out
}

// fillGolden runs the golden columns over sel grouped by t.by into t's
// rows (rows appear as series do).
func (s *Source) fillGolden(ctx context.Context, t *table, sel []string, window time.Duration) error {
	return s.fillColumns(ctx, t, GoldenColumns, sel, window)
}

// fillColumns runs cols (GoldenColumns or RouteColumns) over sel grouped
// by t.by into t's rows.
func (s *Source) fillColumns(ctx context.Context, t *table, cols []Column, sel []string, window time.Duration) error {
	set := map[string]func(r *row, v float64){
		ColRequests.Name:    func(r *row, v float64) { r.Requests = v },
		ColRPS.Name:         func(r *row, v float64) { r.RPS = v },
		ColSuccessRate.Name: func(r *row, v float64) { r.SuccessRate = ptr(v) },
		ColP50.Name:         func(r *row, v float64) { r.P50Ms = ptr(v * 1000) },
		ColP95.Name:         func(r *row, v float64) { r.P95Ms = ptr(v * 1000) },
		ColP99.Name:         func(r *row, v float64) { r.P99Ms = ptr(v * 1000) },
		ColTCPConns.Name:    func(r *row, v float64) { r.TCPConns = ptr(v) },
	}
	for _, c := range cols {
		vec, err := s.C.Query(ctx, c.Fill(sel, t.by, window))
		if err != nil {
			return err
		}
		for _, smp := range vec {
			v := float64(smp.Value)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				// No requests (0/0) or no finite bucket: no figure.
				continue
			}
			set[c.Name](t.get(smp.Metric), v)
		}
	}
	return nil
}

// fillMeshed counts the scraped proxies of each row.
func (s *Source) fillMeshed(ctx context.Context, t *table, sel []string) error {
	vec, err := s.C.Query(ctx, ColMeshedPods.Fill(sel, t.by, 0))
	if err != nil {
		return err
	}
	for _, smp := range vec {
		t.get(smp.Metric).meshed = int(smp.Value)
	}
	return nil
}

func ptr(v float64) *float64 { return &v }

// merge folds b into a: counts add, the success rate is weighted by
// requests, and the quantiles are the busier row's (quantiles of two
// histograms cannot be combined from the quantiles alone).
func merge(a, b model.Golden) model.Golden {
	out := a
	out.Requests = a.Requests + b.Requests
	out.RPS = a.RPS + b.RPS
	switch {
	case a.SuccessRate == nil:
		out.SuccessRate = b.SuccessRate
	case b.SuccessRate != nil && out.Requests > 0:
		out.SuccessRate = ptr((*a.SuccessRate*a.Requests + *b.SuccessRate*b.Requests) / out.Requests)
	}
	if b.Requests > a.Requests || a.P50Ms == nil {
		out.P50Ms, out.P95Ms, out.P99Ms = b.P50Ms, b.P95Ms, b.P99Ms
	}
	if b.TCPConns != nil {
		sum := *b.TCPConns
		if a.TCPConns != nil {
			sum += *a.TCPConns
		}
		out.TCPConns = &sum
	}
	return out
}
