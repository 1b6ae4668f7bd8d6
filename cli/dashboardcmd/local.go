package dashboardcmd

import (
	"fmt"

	"github.com/trellis-mesh/trellis/cli/demo"
	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/scrape"
)

// LocalConfig is the dashboard of a running `trellis demo`: the figures
// from the demo's proxies scraped directly (viz/scrape), their
// identities and policy decisions from the same /metrics, and the taps
// of tap (nil: the tap page explains there is none).
func LocalConfig(p demo.Plan, tap model.Tapper) dashboard.Config {
	targets := make([]scrape.Target, 0, len(p.Workloads))
	for _, w := range p.Workloads {
		targets = append(targets, scrape.Target{
			Resource:   model.Resource{Kind: scrape.Kind, Name: w.Name},
			Identity:   w.Identity(),
			MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", w.AdminPort),
		})
	}
	sc := &dashboard.Scraped{Targets: targets}
	return dashboard.Config{Source: &scrape.Source{Targets: targets}, Tapper: tap, Identities: sc, Decisions: sc,
		Local: true, Title: "trellis demo"}
}
