package discovery

import (
	"google.golang.org/protobuf/proto"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

// configure applies a Service's balancer settings, carried by every
// AddSet. A value the proxy cannot parse is logged (once per change) and
// replaced by the default, so a typo never turns protection off.
func (w *watcher) configure(bc *apiv1.BalancerConfig) {
	if bc == nil {
		bc = &apiv1.BalancerConfig{}
	}
	if w.cfg != nil && proto.Equal(w.cfg, bc) {
		return
	}
	w.cfg = bc
	cfg := balance.DefaultConfig()
	if a, err := balance.ParseFailureAccrual(bc.GetFailureAccrual()); err != nil {
		w.r.log.Warn("invalid failure-accrual annotation, using the default", "dst_service", w.svc.authority, "err", err)
	} else {
		cfg.Accrual = a
	}
	if ss, err := balance.ParseSlowStart(bc.GetSlowStart()); err != nil {
		w.r.log.Warn("invalid slow-start annotation, using the default", "dst_service", w.svc.authority, "err", err)
	} else {
		cfg.SlowStart = ss
	}
	w.svc.bal.SetConfig(cfg)
}

// balancerCollector exports every live destination's balancer state at
// scrape time, so picks pay for no metric update. The ejected gauge lists
// only endpoints that are out (at most half of each destination's).
type balancerCollector struct{ r *Resolver }

var (
	descEjected = prometheus.NewDesc("trellis_endpoint_ejected",
		"1 for each endpoint the circuit breaker holds out of the balancer (ejected or being probed).",
		[]string{"dst_service", "endpoint"}, nil)
	descEjections = prometheus.NewDesc("trellis_ejections_total",
		"Endpoints ejected by the circuit breaker.", []string{"dst_service"}, nil)
	descFloor = prometheus.NewDesc("trellis_ejections_refused_total",
		"Ejections refused because half of the destination's endpoints were already out.", []string{"dst_service"}, nil)
	descPicks = prometheus.NewDesc("trellis_balancer_picks_total",
		"Endpoints chosen by the balancer (one per attempt).", []string{"dst_service"}, nil)
	descCross = prometheus.NewDesc("trellis_cross_zone_requests_total",
		"Endpoints chosen outside the proxy's zone (known zones only).", []string{"dst_service"}, nil)
)

func (balancerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEjected, descEjections, descFloor, descPicks, descCross} {
		ch <- d
	}
}

func (c balancerCollector) Collect(ch chan<- prometheus.Metric) {
	c.r.mu.RLock()
	defer c.r.mu.RUnlock()
	for name, svc := range c.r.services {
		st := svc.bal.Status()
		for _, addr := range st.Ejected {
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, 1, name, addr)
		}
		ch <- prometheus.MustNewConstMetric(descEjections, prometheus.CounterValue, float64(st.Ejections), name)
		ch <- prometheus.MustNewConstMetric(descFloor, prometheus.CounterValue, float64(st.FloorHits), name)
		ch <- prometheus.MustNewConstMetric(descPicks, prometheus.CounterValue, float64(st.Picks), name)
		ch <- prometheus.MustNewConstMetric(descCross, prometheus.CounterValue, float64(st.CrossZone), name)
	}
}
