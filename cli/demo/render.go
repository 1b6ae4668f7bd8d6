package demo

import (
	"fmt"
	"io"
	"math"
	"text/tabwriter"

	"github.com/trellis-mesh/trellis/viz/stats"
)

// Report is the golden signals of every workload and edge over one span.
type Report struct {
	Seconds   float64
	Workloads []WorkloadRow
	Edges     []EdgeRow
}

// WorkloadRow is one workload as its own proxy saw its inbound traffic.
type WorkloadRow struct {
	Name string
	stats.Counts
}

// EdgeRow is traffic from Source as its proxy saw it going out.
type EdgeRow struct {
	Source string
	stats.Edge
}

// BuildReport computes the report from per-workload deltas, in the order
// of names. Edges that carried nothing in the span are left out.
func BuildReport(names []string, deltas map[string]stats.Snapshot, seconds float64) Report {
	r := Report{Seconds: seconds}
	for _, name := range names {
		d := deltas[name]
		r.Workloads = append(r.Workloads, WorkloadRow{Name: name, Counts: d.Total(stats.Inbound)})
		for _, e := range d.Edges() {
			if e.Requests() > 0 {
				r.Edges = append(r.Edges, EdgeRow{Source: name, Edge: e})
			}
		}
	}
	return r
}

// WriteTables prints the two tables under a title line.
func WriteTables(w io.Writer, r Report, title string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\n\n", title)
	fmt.Fprintln(tw, "WORKLOAD\tSUCCESS\tRPS\tP50\tP95\tP99\t")
	for _, row := range r.Workloads {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", row.Name, percent(row.SuccessRate()),
			rate(row.Rate(r.Seconds)), millis(row.Quantile(0.5)), millis(row.Quantile(0.95)), millis(row.Quantile(0.99)))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "SRC\tDST\tSUCCESS\tRPS\tP50\tP95\tP99\tMTLS")
	if len(r.Edges) == 0 {
		fmt.Fprintln(tw, "(no traffic yet)\t\t\t\t\t\t\t")
	}
	for _, e := range r.Edges {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Source, e.Destination, percent(e.SuccessRate()),
			rate(e.Rate(r.Seconds)), millis(e.Quantile(0.5)), millis(e.Quantile(0.95)), millis(e.Quantile(0.99)), mtls(e.Edge))
	}
	fmt.Fprintln(tw)
	return tw.Flush()
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", v*100)
}

func rate(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.1f", v)
}

func millis(seconds float64) string {
	if math.IsNaN(seconds) || math.IsInf(seconds, 0) {
		return "-"
	}
	ms := seconds * 1000
	if ms < 10 {
		return fmt.Sprintf("%.2fms", ms)
	}
	return fmt.Sprintf("%.0fms", ms)
}

func mtls(e stats.Edge) string {
	if e.MTLS {
		return "yes (" + e.PeerIdentity + ")"
	}
	return "no"
}

// Summary is the machine-readable form printed by `-o json`. Figures that
// are undefined for a span without requests (success rate, latencies) are
// null.
type Summary struct {
	DurationSeconds float64           `json:"duration_seconds"`
	Workloads       []WorkloadSummary `json:"workloads"`
	Edges           []EdgeSummary     `json:"edges"`
}

// WorkloadSummary is one workload over the run.
type WorkloadSummary struct {
	Name        string   `json:"name"`
	SuccessRate *float64 `json:"success_rate"`
	RPS         float64  `json:"rps"`
	P50Ms       *float64 `json:"p50_ms"`
	P95Ms       *float64 `json:"p95_ms"`
	P99Ms       *float64 `json:"p99_ms"`
	Requests    uint64   `json:"requests"`
}

// EdgeSummary is one edge over the run.
type EdgeSummary struct {
	Source       string   `json:"source"`
	Destination  string   `json:"destination"`
	PeerIdentity string   `json:"peer_identity"`
	MTLS         bool     `json:"mtls"`
	SuccessRate  *float64 `json:"success_rate"`
	RPS          float64  `json:"rps"`
	P50Ms        *float64 `json:"p50_ms"`
	P95Ms        *float64 `json:"p95_ms"`
	P99Ms        *float64 `json:"p99_ms"`
	Requests     uint64   `json:"requests"`
}

// Summary converts the report for JSON.
func (r Report) Summary() Summary {
	s := Summary{DurationSeconds: round(r.Seconds, 3), Workloads: []WorkloadSummary{}, Edges: []EdgeSummary{}}
	rps := func(c stats.Counts) float64 {
		if v := c.Rate(r.Seconds); !math.IsNaN(v) {
			return round(v, 2)
		}
		return 0
	}
	for _, w := range r.Workloads {
		s.Workloads = append(s.Workloads, WorkloadSummary{
			Name: w.Name, SuccessRate: ratio(w.SuccessRate()), RPS: rps(w.Counts),
			P50Ms: ms(w.Quantile(0.5)), P95Ms: ms(w.Quantile(0.95)), P99Ms: ms(w.Quantile(0.99)),
			Requests: uint64(w.Requests()),
		})
	}
	for _, e := range r.Edges {
		s.Edges = append(s.Edges, EdgeSummary{
			Source: e.Source, Destination: e.Destination, PeerIdentity: e.PeerIdentity, MTLS: e.MTLS,
			SuccessRate: ratio(e.SuccessRate()), RPS: rps(e.Counts),
			P50Ms: ms(e.Quantile(0.5)), P95Ms: ms(e.Quantile(0.95)), P99Ms: ms(e.Quantile(0.99)),
			Requests: uint64(e.Requests()),
		})
	}
	return s
}

func ratio(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	v = round(v, 4)
	return &v
}

func ms(seconds float64) *float64 {
	if math.IsNaN(seconds) || math.IsInf(seconds, 0) {
		return nil
	}
	v := round(seconds*1000, 3)
	return &v
}

func round(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}
