package dashboardcmd

import (
	"context"
	"fmt"

	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/cli/demo"
	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/cli/vizcmd"
	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/k8stap"
	"github.com/trellis-mesh/trellis/viz/localtap"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
	"github.com/trellis-mesh/trellis/viz/scrape"
)

// ViewsFunc builds the dashboard's sources from the flags; stop releases
// them (the port-forward).
type ViewsFunc func(ctx context.Context, f *vizcmd.SourceFlags) (cfg dashboard.Config, stop func(), err error)

// FromFlags finds the figures as every view does (vizcmd.SourceFlags:
// --prometheus-url, local mode, else the cluster's viz Prometheus through
// a port-forward) and the taps beside them: the aggregated API with the
// kubeconfig's credentials, or the running demo's local tap API.
func FromFlags(ctx context.Context, f *vizcmd.SourceFlags) (dashboard.Config, func(), error) {
	opened, err := f.Open(ctx)
	if err != nil {
		return dashboard.Config{}, nil, err
	}
	if src, ok := opened.Source.(*scrape.Source); ok {
		tap, _, err := localtap.FindRunning()
		if err != nil {
			tap = nil // the tap page explains; the figures still show
		}
		cfg := localConfig(src.Targets, tapperOrNil(tap))
		cfg.Title = opened.Where
		return cfg, opened.Close, nil
	}
	cfg := dashboard.Config{Source: opened.Source, Title: opened.Where}
	rc, kerr := kubeconfig.Load(f.Kubeconfig, f.Context)
	if kerr != nil {
		// --prometheus-url without a cluster: figures only.
		return cfg, opened.Close, nil
	}
	cs := opened.Kube
	if cs == nil {
		if cs, err = kubernetes.NewForConfig(rc); err != nil {
			opened.Close()
			return dashboard.Config{}, nil, fmt.Errorf("kubernetes client: %w", err)
		}
	}
	views := &kubeViews{client: cs}
	if p, ok := opened.Source.(*prom.Source); ok {
		views.prom = p.C
	}
	cfg.Tapper = &k8stap.Tapper{Config: rc}
	cfg.Identities, cfg.Decisions = views, views
	return cfg, opened.Close, nil
}

// tapperOrNil keeps a nil *localtap.Tapper from becoming a non-nil
// interface.
func tapperOrNil(t *localtap.Tapper) model.Tapper {
	if t == nil {
		return nil
	}
	return t
}

// LocalConfig is the dashboard of a running `trellis demo`: its proxies
// scraped directly, its local tap API.
func LocalConfig(p demo.Plan) dashboard.Config {
	targets := make([]scrape.Target, 0, len(p.Workloads))
	for _, w := range p.Workloads {
		targets = append(targets, scrape.Target{
			Resource:   model.Resource{Kind: scrape.Kind, Name: w.Name},
			Identity:   w.Identity(),
			MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", w.AdminPort),
		})
	}
	var tap model.Tapper
	if t, err := localtap.Open(p.Dir); err == nil {
		tap = t
	}
	cfg := localConfig(targets, tap)
	cfg.Title = "trellis demo"
	return cfg
}

// localConfig: the figures from viz/scrape, identities and policy
// decisions from the same /metrics.
func localConfig(targets []scrape.Target, tap model.Tapper) dashboard.Config {
	sc := &dashboard.Scraped{Targets: targets}
	return dashboard.Config{Source: &scrape.Source{Targets: targets}, Tapper: tap, Identities: sc, Decisions: sc, Local: true}
}
