package discovery

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	proxymetrics "github.com/trellis-mesh/trellis/proxy/metrics"
)

type metrics struct {
	updates   *prometheus.CounterVec
	endpoints *prometheus.GaugeVec
	invalid   prometheus.Counter
	// cp is trellis_control_plane_*{service="destination"}, shared with
	// the policy and routes clients.
	cp *proxymetrics.ControlPlane
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_discovery_updates_total",
			Help: "Destination updates received.",
		}, []string{"kind"}),
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_endpoints",
			Help: "Endpoints known for a destination.",
		}, []string{"dst_service"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_discovery_invalid_total",
			Help: "Endpoints or updates from the Destination service that were invalid and skipped.",
		}),
	}
	var errs []error
	var err error
	if m.updates, err = register(reg, m.updates); err != nil {
		errs = append(errs, err)
	}
	if m.endpoints, err = register(reg, m.endpoints); err != nil {
		errs = append(errs, err)
	}
	if m.invalid, err = register(reg, m.invalid); err != nil {
		errs = append(errs, err)
	}
	if m.cp, err = proxymetrics.NewControlPlane(reg, "destination"); err != nil {
		errs = append(errs, err)
	}
	for _, k := range []string{"add", "remove", "no_endpoints"} {
		m.updates.WithLabelValues(k)
	}
	return m, errors.Join(errs...)
}

// register registers c, or returns the identical collector registered
// before (another Resolver, or another package sharing a metric).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metric: %w", err)
	}
	return c, nil
}
