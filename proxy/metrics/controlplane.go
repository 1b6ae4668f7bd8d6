package metrics

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ControlPlaneConnectedHelp is the help text of trellis_control_plane_connected.
// proxy/certifier and proxy/discovery register the same metric (for
// service="identity" and "destination"); a collector registered twice must
// match exactly.
const ControlPlaneConnectedHelp = "1 while a stream/call to the controller is healthy."

// ControlPlane is the metrics of one control-plane watch client, one series
// of each trellis_control_plane_* metric labelled service=<its service>.
// Several clients share the collectors on one registry.
type ControlPlane struct {
	connected    prometheus.Gauge
	lastUpdate   prometheus.Gauge
	watches      prometheus.Gauge
	updatesOK    prometheus.Counter
	updatesBad   prometheus.Counter
	streamErrors prometheus.Counter

	mu      sync.Mutex
	healthy int // streams that received a message and have not failed since
}

// NewControlPlane registers (or reuses) the trellis_control_plane_*
// collectors on reg and binds them to service. A nil reg leaves them
// unregistered. On a registration conflict it still returns usable metrics
// with the error, so a client keeps working unobserved.
func NewControlPlane(reg prometheus.Registerer, service string) (*ControlPlane, error) {
	connected := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_control_plane_connected", Help: ControlPlaneConnectedHelp,
	}, []string{"service"})
	last := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_control_plane_last_update_timestamp_seconds",
		Help: "When the last message of any stream of the service arrived (Unix time; 0: never).",
	}, []string{"service"})
	watches := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_control_plane_watches",
		Help: "Keys (ports, authorities) watched: each holds one stream, or retries one.",
	}, []string{"service"})
	updates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_control_plane_updates_total",
		Help: "Messages received from the controller; result=invalid were refused and the last good answer kept.",
	}, []string{"service", "result"})
	streamErrors := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_control_plane_stream_errors_total",
		Help: "Streams that failed to open or broke; each is retried with backoff.",
	}, []string{"service"})
	var errs []error
	connected, errs = reuse(reg, connected, errs)
	last, errs = reuse(reg, last, errs)
	watches, errs = reuse(reg, watches, errs)
	updates, errs = reuse(reg, updates, errs)
	streamErrors, errs = reuse(reg, streamErrors, errs)
	return &ControlPlane{
		connected:    connected.WithLabelValues(service),
		lastUpdate:   last.WithLabelValues(service),
		watches:      watches.WithLabelValues(service),
		updatesOK:    updates.WithLabelValues(service, "ok"),
		updatesBad:   updates.WithLabelValues(service, "invalid"),
		streamErrors: streamErrors.WithLabelValues(service),
	}, errors.Join(errs...)
}

// reuse registers c, or returns the identical collector registered before
// (another client, or another package sharing a metric).
func reuse[C prometheus.Collector](reg prometheus.Registerer, c C, errs []error) (C, []error) {
	if reg == nil {
		return c, errs
	}
	err := reg.Register(c)
	if err == nil {
		return c, errs
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, errs
		}
	}
	return c, append(errs, fmt.Errorf("register metric: %w", err))
}

// StreamUp counts a stream healthy (it received its first message);
// trellis_control_plane_connected is 1 while at least one is.
func (m *ControlPlane) StreamUp() {
	m.mu.Lock()
	m.healthy++
	m.connected.Set(1)
	m.mu.Unlock()
}

// StreamDown undoes StreamUp when a healthy stream ends.
func (m *ControlPlane) StreamDown() {
	m.mu.Lock()
	m.healthy--
	if m.healthy <= 0 {
		m.connected.Set(0)
	}
	m.mu.Unlock()
}

// StreamError counts a stream that failed to open or broke.
func (m *ControlPlane) StreamError() { m.streamErrors.Inc() }

// Update counts a message; valid ones also set the last update time.
func (m *ControlPlane) Update(valid bool, at time.Time) {
	if !valid {
		m.updatesBad.Inc()
		return
	}
	m.updatesOK.Inc()
	m.lastUpdate.Set(float64(at.UnixNano()) / 1e9)
}

// Watches sets the number of keys watched.
func (m *ControlPlane) Watches(n int) { m.watches.Set(float64(n)) }
