package mirror

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/trellis-mesh/trellis/internal/mclink"
)

// metrics are the link health figures (docs/multicluster.md).
type metrics struct {
	lastSync    *prometheus.GaugeVec
	errors      *prometheus.CounterVec
	watchErrors *prometheus.CounterVec
	conflicts   *prometheus.CounterVec
	unmeshed    *prometheus.GaugeVec
	badLinks    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, counts func() map[string][2]int) (*metrics, error) {
	m := &metrics{
		lastSync: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: mclink.MetricLastSync,
			Help: "When the link last read its peer in full or mirrored a peer service without error (Unix time), by link (peer cluster).",
		}, []string{"link"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: mclink.MetricSyncErrors,
			Help: "Mirror syncs that failed and were retried, by link.",
		}, []string{"link"}),
		watchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: mclink.MetricWatchErrors,
			Help: "Failed lists and watches of the peer's API server, by link (the mirrors are kept meanwhile).",
		}, []string{"link"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: mclink.MetricConflicts,
			Help: "Mirror writes refused because a Service of the mirror's name exists and is not that link's mirror, by link.",
		}, []string{"link"}),
		unmeshed: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: mclink.MetricUnmeshedEndpoints,
			Help: "Serving endpoints of an exported peer service left out of its mirror because they are not meshed pods, by link, namespace and service.",
		}, []string{"link", "namespace", "service"}),
		badLinks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_multicluster_bad_link_secrets_total",
			Help: "Link Secrets that could not be read (the log names the field); their links keep running as before.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lastSync, m.errors, m.watchErrors, m.conflicts, m.unmeshed, m.badLinks, countCollector(counts)} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) synced(cluster string, t time.Time) {
	m.lastSync.WithLabelValues(cluster).Set(float64(t.UnixNano()) / 1e9)
}

var (
	servicesDesc = prometheus.NewDesc(mclink.MetricMirroredServices,
		"Mirror Services in this cluster, by link.", []string{"link"}, nil)
	endpointsDesc = prometheus.NewDesc(mclink.MetricMirroredEndpoints,
		"Endpoints in the mirror EndpointSlices of this cluster, by link.", []string{"link"}, nil)
)

// countCollector reports the mirrors held, counted at scrape time.
type countCollector func() map[string][2]int

func (c countCollector) Describe(ch chan<- *prometheus.Desc) { ch <- servicesDesc; ch <- endpointsDesc }

func (c countCollector) Collect(ch chan<- prometheus.Metric) {
	for link, n := range c() {
		ch <- prometheus.MustNewConstMetric(servicesDesc, prometheus.GaugeValue, float64(n[0]), link)
		ch <- prometheus.MustNewConstMetric(endpointsDesc, prometheus.GaugeValue, float64(n[1]), link)
	}
}

// counts are the mirror services and endpoints per link, from the caches
// (none before Run).
func (m *Mirror) counts() map[string][2]int {
	out := map[string][2]int{}
	m.mu.Lock()
	svcs, sls := m.services, m.slices
	m.mu.Unlock()
	if svcs == nil || sls == nil {
		return out
	}
	for _, obj := range svcs.GetStore().List() {
		l := obj.(*corev1.Service).Labels[mclink.LabelLink]
		n := out[l]
		n[0]++
		out[l] = n
	}
	for _, obj := range sls.GetStore().List() {
		sl := obj.(*discoveryv1.EndpointSlice)
		if sl.Labels[discoveryv1.LabelManagedBy] != mclink.ManagedBy {
			continue
		}
		l := sl.Labels[mclink.LabelLink]
		n := out[l]
		n[1] += len(sl.Endpoints)
		out[l] = n
	}
	return out
}
