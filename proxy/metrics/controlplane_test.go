package metrics_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/certifier"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// The proxy registers certifier, discovery and the watch clients' metrics
// on one registry; trellis_control_plane_connected is shared, which works
// only while the descriptions are identical, and each client keeps its own
// series.
func TestControlPlaneShared(t *testing.T) {
	if metrics.ControlPlaneConnectedHelp != certifier.ControlPlaneConnectedHelp {
		t.Fatalf("help texts differ: %q vs %q", metrics.ControlPlaneConnectedHelp, certifier.ControlPlaneConnectedHelp)
	}
	reg := prometheus.NewRegistry()
	identity := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "trellis_control_plane_connected", Help: certifier.ControlPlaneConnectedHelp}, []string{"service"})
	reg.MustRegister(identity)
	identity.WithLabelValues("identity").Set(1)
	policy, err := metrics.NewControlPlane(reg, "policy")
	if err != nil {
		t.Fatal(err)
	}
	routes, err := metrics.NewControlPlane(reg, "routes")
	if err != nil {
		t.Fatal(err)
	}
	policy.StreamUp()
	policy.StreamUp()
	policy.StreamDown()
	routes.StreamUp()
	routes.StreamDown()
	at := time.Unix(1700000000, 500_000_000)
	policy.Update(true, at)
	policy.Update(false, at.Add(time.Hour)) // refused: no new time
	policy.StreamError()
	routes.Watches(3)

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"trellis_control_plane_connected", map[string]string{"service": "identity"}, 1},
		{"trellis_control_plane_connected", map[string]string{"service": "policy"}, 1},
		{"trellis_control_plane_connected", map[string]string{"service": "routes"}, 0},
		{"trellis_control_plane_last_update_timestamp_seconds", map[string]string{"service": "policy"}, 1700000000.5},
		{"trellis_control_plane_last_update_timestamp_seconds", map[string]string{"service": "routes"}, 0},
		{"trellis_control_plane_updates_total", map[string]string{"service": "policy", "result": "ok"}, 1},
		{"trellis_control_plane_updates_total", map[string]string{"service": "policy", "result": "invalid"}, 1},
		{"trellis_control_plane_stream_errors_total", map[string]string{"service": "policy"}, 1},
		{"trellis_control_plane_watches", map[string]string{"service": "routes"}, 3},
	} {
		got, ok := grpctest.Metric(t, reg, tc.name, tc.labels)
		if !ok || got != tc.want {
			t.Errorf("%s%v = %v (present %v), want %v", tc.name, tc.labels, got, ok, tc.want)
		}
	}
}
