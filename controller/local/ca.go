package local

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/controller/ca"
	"github.com/trellis-mesh/trellis/controller/metrics"
)

// identityMetrics are the CA reload metrics (docs/controller.md), kept
// beside the wiring that feeds them.
type identityMetrics struct {
	reg     prometheus.Registerer
	reloads *prometheus.CounterVec
}

func newIdentityMetrics(m *metrics.Metrics) *identityMetrics {
	im := &identityMetrics{
		reg: m.Registry,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_issuer_reload_total",
			Help: "Reloads of changed issuer or trust bundle files, by result (ok, error); error is a refused change, the previous issuer keeps serving.",
		}, []string{"result"}),
	}
	for _, r := range []string{"ok", "error"} {
		im.reloads.WithLabelValues(r)
	}
	m.Registry.MustRegister(im.reloads)
	return im
}

func (im *identityMetrics) reloaded(err error) {
	if err != nil {
		im.reloads.WithLabelValues("error").Inc()
		return
	}
	im.reloads.WithLabelValues("ok").Inc()
}

// register adds the metrics that read the CA at scrape time.
func (im *identityMetrics) register(authority *ca.CA) {
	im.reg.MustRegister(metrics.IssuerValid(authority.Check))
}

// readiness serves /ready itself, so it can tell why the controller is not
// ready, and everything else from the admin handler. Ready means serving,
// with an issuer that can sign and a valid serving certificate.
func readiness(next http.Handler, up *atomic.Bool, authority *ca.CA, serving *ca.ServingCert) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		if !up.Load() {
			http.Error(w, "not ready: not serving", http.StatusServiceUnavailable)
			return
		}
		if err := authority.Check(now); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if leaf := serving.Leaf(); leaf == nil || now.After(leaf.NotAfter) {
			http.Error(w, "not ready: the controller has no valid serving certificate yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
