package external

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/trellis-mesh/trellis/controller/k8s/epslice"
)

// metrics of the controller (docs/metrics.md); zero on a replica that
// does not lead.
type metrics struct {
	errors prometheus.Counter
	writes *prometheus.CounterVec
	gauge  *prometheus.GaugeVec

	mu     sync.Mutex
	counts map[string][2]int // by Service: ready, not ready
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_controller_external_workload_sync_errors_total",
			Help: "Syncs of a Service's ExternalWorkload EndpointSlices that failed and were retried.",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_external_workload_slice_writes_total",
			Help: "ExternalWorkload EndpointSlices written, by operation (create, update, delete).",
		}, []string{"op"}),
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_controller_external_workload_endpoints",
			Help: "Endpoints in the ExternalWorkload EndpointSlices this replica maintains, by readiness (ready: the workload is certified).",
		}, []string{"ready"}),
		counts: map[string][2]int{},
	}
	for _, op := range []string{"create", "update", "delete"} {
		m.writes.WithLabelValues(op)
	}
	m.reset()
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.errors, m.writes, m.gauge} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) wrote(w epslice.Writes) {
	m.writes.WithLabelValues("create").Add(float64(w.Created))
	m.writes.WithLabelValues("update").Add(float64(w.Updated))
	m.writes.WithLabelValues("delete").Add(float64(w.Deleted))
}

// endpoints records the endpoints of a Service's slices once written.
func (m *metrics) endpoints(key string, sls []*discoveryv1.EndpointSlice) {
	var n [2]int
	for _, sl := range sls {
		for _, ep := range sl.Endpoints {
			if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
				n[0]++
			} else {
				n[1]++
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := m.counts[key]
	if n == [2]int{} {
		delete(m.counts, key)
	} else {
		m.counts[key] = n
	}
	m.gauge.WithLabelValues("true").Add(float64(n[0] - old[0]))
	m.gauge.WithLabelValues("false").Add(float64(n[1] - old[1]))
}

// reset forgets every count (leadership lost: another replica keeps them).
func (m *metrics) reset() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.counts)
	m.gauge.WithLabelValues("true").Set(0)
	m.gauge.WithLabelValues("false").Set(0)
}
