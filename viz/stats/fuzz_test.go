package stats

import (
	"math"
	"strings"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add(scrape1)
	f.Add(scrape2)
	f.Add("")
	f.Add("# TYPE trellis_response_latency_seconds histogram\ntrellis_response_latency_seconds_bucket{le=\"NaN\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := Parse(strings.NewReader(text))
		if err != nil {
			return
		}
		d := s.Sub(Snapshot{})
		for _, dir := range []string{Inbound, Outbound} {
			c := d.Total(dir)
			for _, q := range []float64{0.5, 0.95, 0.99} {
				_ = c.Quantile(q)
			}
			if sr := c.SuccessRate(); !math.IsNaN(sr) && (sr < 0 || sr > 1) && c.Success >= 0 && c.Failure >= 0 {
				t.Errorf("success rate %v out of [0,1] for %+v", sr, c)
			}
		}
		_ = d.Edges()
	})
}
