package discovery

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/certifier"
)

// The proxy registers certifier and discovery metrics in one registry; both
// own a series of trellis_control_plane_connected, which only works if the
// two descriptions are identical.
func TestSharedControlPlaneMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	other := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "trellis_control_plane_connected", Help: certifier.ControlPlaneConnectedHelp}, []string{"service"})
	reg.MustRegister(other)
	other.WithLabelValues("identity").Set(1)
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.cp.StreamUp()
	if got := metricValue(t, reg, "trellis_control_plane_connected", map[string]string{"service": "destination"}); got != 1 {
		t.Fatalf("destination series = %v, want 1", got)
	}
	if got := metricValue(t, reg, "trellis_control_plane_connected", map[string]string{"service": "identity"}); got != 1 {
		t.Fatalf("identity series = %v, want 1", got)
	}
	// A second Resolver on the same registry reuses the collectors.
	if _, err := newMetrics(reg); err != nil {
		t.Fatal(err)
	}
}
