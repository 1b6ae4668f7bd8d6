package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a /metrics endpoint.
type Metrics map[string]*dto.MetricFamily

// Scrape reads and parses http://addr/metrics.
func Scrape(ctx context.Context, addr string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: status %s", addr, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ParseMetrics parses Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return Metrics(fams), nil
}

// matches reports whether m carries every label of want with that value
// (a wanted empty value also matches an absent label).
func matches(m *dto.Metric, want map[string]string) bool {
	for k, v := range want {
		got, found := "", false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == k {
				got, found = lp.GetValue(), true
				break
			}
		}
		if got != v || (!found && v != "") {
			return false
		}
	}
	return true
}

// Sum adds the values of every series of the counter, gauge or untyped
// metric name whose labels include want. For a histogram it adds the
// sample counts. found is false when no series matched.
func (ms Metrics) Sum(name string, want map[string]string) (sum float64, found bool) {
	f, ok := ms[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !matches(m, want) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.GetCounter().GetValue()
		case m.Gauge != nil:
			sum += m.GetGauge().GetValue()
		case m.Untyped != nil:
			sum += m.GetUntyped().GetValue()
		case m.Histogram != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, found
}

// Value is Sum with 0 for missing series.
func (ms Metrics) Value(name string, want map[string]string) float64 {
	v, _ := ms.Sum(name, want)
	return v
}

// Series lists the label sets of a metric, for failure messages.
func (ms Metrics) Series(name string) string {
	f, ok := ms[name]
	if !ok {
		return name + ": absent"
	}
	var lines []string
	for _, m := range f.GetMetric() {
		var ls []string
		for _, lp := range m.GetLabel() {
			ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
		}
		var v float64
		switch {
		case m.Counter != nil:
			v = m.GetCounter().GetValue()
		case m.Gauge != nil:
			v = m.GetGauge().GetValue()
		case m.Untyped != nil:
			v = m.GetUntyped().GetValue()
		case m.Histogram != nil:
			v = float64(m.GetHistogram().GetSampleCount())
		}
		lines = append(lines, fmt.Sprintf("%s{%s} %g", name, strings.Join(ls, ","), v))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
