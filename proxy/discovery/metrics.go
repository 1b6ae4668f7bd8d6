package discovery

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// controlPlaneConnectedHelp must equal proxy/certifier's, which registers
// the same metric for service="identity".
const controlPlaneConnectedHelp = "1 while a stream/call to the controller is healthy."

type metrics struct {
	updates   *prometheus.CounterVec
	endpoints *prometheus.GaugeVec
	invalid   prometheus.Counter
	connected prometheus.Gauge

	mu      sync.Mutex
	healthy int // streams that received a message and have not failed since
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
	connected := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_control_plane_connected",
		Help: controlPlaneConnectedHelp,
	}, []string{"service"})
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
	if connected, err = register(reg, connected); err != nil {
		errs = append(errs, err)
	}
	for _, k := range []string{"add", "remove", "no_endpoints"} {
		m.updates.WithLabelValues(k)
	}
	m.connected = connected.WithLabelValues("destination")
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

// streamUp and streamDown keep trellis_control_plane_connected{service=
// "destination"} at 1 while at least one stream is healthy.
func (m *metrics) streamUp() {
	m.mu.Lock()
	m.healthy++
	m.connected.Set(1)
	m.mu.Unlock()
}

func (m *metrics) streamDown() {
	m.mu.Lock()
	m.healthy--
	if m.healthy <= 0 {
		m.connected.Set(0)
	}
	m.mu.Unlock()
}
