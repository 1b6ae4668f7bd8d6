package dashboardcmd

import (
	"fmt"

	"github.com/trellis-mesh/trellis/cli/demo"
	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/model"
)

// LocalConfig is the dashboard of a running `trellis demo`: the figures
// and taps from src and tap, the identities and policy decisions read
// from each proxy's admin /metrics.
func LocalConfig(p demo.Plan, src model.Source, tap model.Tapper) dashboard.Config {
	sc := &dashboard.Scraped{}
	for _, w := range p.Workloads {
		sc.Targets = append(sc.Targets, dashboard.Target{
			Resource:   model.Resource{Kind: "workloads", Name: w.Name},
			Identity:   w.Identity(),
			MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", w.AdminPort),
		})
	}
	return dashboard.Config{Source: src, Tapper: tap, Identities: sc, Decisions: sc, Local: true, Title: "trellis demo"}
}
