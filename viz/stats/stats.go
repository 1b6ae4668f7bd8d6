// Package stats turns the Prometheus text exposition of trellis-proxy
// (metric names and labels in docs/metrics.md) into per-workload and
// per-edge golden signals: success rate, request rate and latency quantiles.
//
// Everything here is pure: parse a scrape into a Snapshot, subtract two
// snapshots to get what happened in between, then read the figures.
package stats

import (
	"fmt"
	"io"
	"math"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names read from the proxies (docs/metrics.md).
const (
	ResponsesMetric = "trellis_responses_total"
	LatencyMetric   = "trellis_response_latency_seconds"
)

// Directions as they appear in the `direction` label.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// Key identifies one series group of a proxy: every status code, gRPC status
// and classification of the same direction, destination and peer is folded
// into one Counts.
type Key struct {
	Direction    string
	DstService   string
	PeerIdentity string
	TLS          bool
}

// Counts is what one Key accumulated: finished responses by classification,
// and the latency histogram of the same responses.
type Counts struct {
	Success float64
	Failure float64
	Latency Histogram
}

// Histogram is a cumulative Prometheus histogram. Buckets maps a finite
// upper bound to the number of observations less than or equal to it; the
// +Inf bucket is Count.
type Histogram struct {
	Buckets map[float64]float64
	Count   float64
	Sum     float64
}

// Snapshot is one proxy's metrics at one instant (or, after Sub, the change
// between two instants).
type Snapshot map[Key]*Counts

// Parse reads Prometheus text exposition format. Families other than the
// two it needs are ignored; a malformed document is an error.
func Parse(r io.Reader) (Snapshot, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return FromFamilies(fams), nil
}

// FromFamilies folds parsed metric families into a Snapshot.
func FromFamilies(fams map[string]*dto.MetricFamily) Snapshot {
	s := Snapshot{}
	if f, ok := fams[ResponsesMetric]; ok {
		for _, m := range f.GetMetric() {
			v := counterValue(m)
			if math.IsNaN(v) || v < 0 {
				continue
			}
			class := label(m, "classification")
			if class == "cancelled" {
				// The client reset or abandoned the request: neither the
				// app's success nor its failure (docs/metrics.md), and not
				// in the latency histogram either.
				continue
			}
			c := s.counts(keyOf(m))
			if class == "success" {
				c.Success += v
			} else {
				// Anything not explicitly a success counts against the
				// success rate, so an unknown classification is never
				// hidden.
				c.Failure += v
			}
		}
	}
	if f, ok := fams[LatencyMetric]; ok {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			c := s.counts(keyOf(m))
			c.Latency.add(fromProto(h))
		}
	}
	return s
}

func counterValue(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	}
	return math.NaN()
}

func fromProto(h *dto.Histogram) Histogram {
	out := Histogram{Buckets: map[float64]float64{}, Count: float64(h.GetSampleCount()), Sum: h.GetSampleSum()}
	if h.SampleCountFloat != nil {
		out.Count = h.GetSampleCountFloat()
	}
	for _, b := range h.GetBucket() {
		ub := b.GetUpperBound()
		n := float64(b.GetCumulativeCount())
		if b.CumulativeCountFloat != nil {
			n = b.GetCumulativeCountFloat()
		}
		if math.IsInf(ub, +1) {
			// The +Inf bucket is the count; trust the larger of the two
			// should a scrape race make them disagree.
			out.Count = math.Max(out.Count, n)
			continue
		}
		if math.IsNaN(ub) {
			continue
		}
		out.Buckets[ub] = n
	}
	return out
}

func keyOf(m *dto.Metric) Key {
	return Key{
		Direction:    label(m, "direction"),
		DstService:   label(m, "dst_service"),
		PeerIdentity: label(m, "peer_identity"),
		TLS:          label(m, "tls") == "true",
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func (s Snapshot) counts(k Key) *Counts {
	c, ok := s[k]
	if !ok {
		c = &Counts{}
		s[k] = c
	}
	return c
}

func (h *Histogram) add(o Histogram) {
	if h.Buckets == nil {
		h.Buckets = map[float64]float64{}
	}
	for ub, n := range o.Buckets {
		h.Buckets[ub] += n
	}
	h.Count += o.Count
	h.Sum += o.Sum
}

// Add accumulates o into c.
func (c *Counts) Add(o Counts) {
	c.Success += o.Success
	c.Failure += o.Failure
	c.Latency.add(o.Latency)
}

// Requests is the number of finished responses.
func (c Counts) Requests() float64 { return c.Success + c.Failure }

// SuccessRate is the share of successful responses, NaN when there were none.
func (c Counts) SuccessRate() float64 {
	n := c.Requests()
	if n == 0 {
		return math.NaN()
	}
	return c.Success / n
}

// Rate is responses per second over the given span, NaN for an empty span.
func (c Counts) Rate(seconds float64) float64 {
	if seconds <= 0 {
		return math.NaN()
	}
	return c.Requests() / seconds
}

// Quantile is the q-quantile of the latency in seconds (see Quantile).
func (c Counts) Quantile(q float64) float64 { return Quantile(q, c.Latency) }

// Sub returns what happened between prev and s. A key whose counters went
// down was reset (the proxy restarted), so its current values are the
// change, as Prometheus' rate() does.
func (s Snapshot) Sub(prev Snapshot) Snapshot { return sub(s, prev) }

func sub[K comparable](s, prev map[K]*Counts) map[K]*Counts {
	out := make(map[K]*Counts, len(s))
	for k, cur := range s {
		p, ok := prev[k]
		if !ok || isReset(*cur, *p) {
			out[k] = cur.clone()
			continue
		}
		d := &Counts{
			Success: cur.Success - p.Success,
			Failure: cur.Failure - p.Failure,
			Latency: Histogram{
				Buckets: make(map[float64]float64, len(cur.Latency.Buckets)),
				Count:   cur.Latency.Count - p.Latency.Count,
				Sum:     cur.Latency.Sum - p.Latency.Sum,
			},
		}
		for ub, n := range cur.Latency.Buckets {
			d.Latency.Buckets[ub] = math.Max(0, n-p.Latency.Buckets[ub])
		}
		out[k] = d
	}
	return out
}

func isReset(cur, prev Counts) bool {
	if cur.Success < prev.Success || cur.Failure < prev.Failure || cur.Latency.Count < prev.Latency.Count {
		return true
	}
	for ub, n := range prev.Latency.Buckets {
		if cur.Latency.Buckets[ub] < n {
			return true
		}
	}
	return false
}

func (c *Counts) clone() *Counts {
	out := &Counts{Success: c.Success, Failure: c.Failure, Latency: Histogram{
		Buckets: make(map[float64]float64, len(c.Latency.Buckets)),
		Count:   c.Latency.Count,
		Sum:     c.Latency.Sum,
	}}
	for ub, n := range c.Latency.Buckets {
		out.Latency.Buckets[ub] = n
	}
	return out
}

// Total folds every key of one direction into one Counts: for inbound, the
// figures of the workload itself.
func (s Snapshot) Total(direction string) Counts {
	var c Counts
	for k, v := range s {
		if k.Direction == direction {
			c.Add(*v)
		}
	}
	return c
}

// Edge is the traffic from one workload to one destination service as seen
// by the client's proxy, split by the identity that served it.
type Edge struct {
	Destination  string
	PeerIdentity string
	// MTLS is true when the hop to the peer proxy was mesh mTLS with a
	// verified peer identity.
	MTLS bool
	Counts
}

// Edges groups the outbound keys by destination, peer identity and TLS,
// sorted by destination then peer for stable output.
func (s Snapshot) Edges() []Edge {
	type edgeKey struct {
		dst, peer string
		mtls      bool
	}
	groups := map[edgeKey]*Counts{}
	for k, v := range s {
		if k.Direction != Outbound {
			continue
		}
		ek := edgeKey{dst: k.DstService, peer: k.PeerIdentity, mtls: k.TLS && k.PeerIdentity != ""}
		g, ok := groups[ek]
		if !ok {
			g = &Counts{}
			groups[ek] = g
		}
		g.Add(*v)
	}
	out := make([]Edge, 0, len(groups))
	for k, c := range groups {
		out = append(out, Edge{Destination: k.dst, PeerIdentity: k.peer, MTLS: k.mtls, Counts: *c})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Destination != b.Destination {
			return a.Destination < b.Destination
		}
		if a.PeerIdentity != b.PeerIdentity {
			return a.PeerIdentity < b.PeerIdentity
		}
		return a.MTLS && !b.MTLS
	})
	return out
}

// Quantile estimates the q-quantile (0 <= q <= 1) of a cumulative
// histogram the way PromQL's histogram_quantile does: find the bucket the
// rank falls in and interpolate linearly inside it, assuming the lowest
// bucket starts at 0. A rank in the +Inf bucket returns the highest finite
// bound. It returns NaN when the histogram is empty or has no finite bucket.
func Quantile(q float64, h Histogram) float64 {
	switch {
	case math.IsNaN(q):
		return math.NaN()
	case q < 0:
		return math.Inf(-1)
	case q > 1:
		return math.Inf(+1)
	}
	if h.Count <= 0 || len(h.Buckets) == 0 {
		return math.NaN()
	}
	type bucket struct{ ub, n float64 }
	bs := make([]bucket, 0, len(h.Buckets)+1)
	for ub, n := range h.Buckets {
		bs = append(bs, bucket{ub, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].ub < bs[j].ub })
	bs = append(bs, bucket{math.Inf(+1), h.Count})
	// Deltas of scrapes that raced with observations can be slightly
	// non-monotonic; make them monotonic as PromQL does.
	for i := 1; i < len(bs); i++ {
		bs[i].n = math.Max(bs[i].n, bs[i-1].n)
	}
	total := bs[len(bs)-1].n
	rank := q * total
	i := sort.Search(len(bs)-1, func(i int) bool { return bs[i].n >= rank })
	if i == len(bs)-1 {
		return bs[len(bs)-2].ub
	}
	if i == 0 && bs[0].ub <= 0 {
		return bs[0].ub
	}
	start, end, count := 0.0, bs[i].ub, bs[i].n
	if i > 0 {
		start = bs[i-1].ub
		count -= bs[i-1].n
		rank -= bs[i-1].n
	}
	if count <= 0 {
		return end
	}
	return start + (end-start)*(rank/count)
}
