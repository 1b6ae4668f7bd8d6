package admin

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/internal/destdebug"
)

// ServeDestination adds GET /debug/destination/AUTHORITY
// [?caller-namespace=NS]: the answer Destination.Get would send first for
// that authority, as JSON (`trellis diagnostics endpoints`). Read-only,
// one named authority per request (no listing), and nothing Destination.Get
// does not already give any TLS client of the gRPC port (it asks no client
// certificate of callers: a proxy has none before its first Certify), so
// the admin port exposes nothing new (docs/observability.md#diagnostics).
func (h *Handler) ServeDestination(reg prometheus.Registerer, src destination.Source) error {
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_controller_debug_requests_total",
		Help: "Requests to the admin port's /debug endpoints, by endpoint and result (ok, bad_request).",
	}, []string{"endpoint", "result"})
	if err := reg.Register(reqs); err != nil {
		return fmt.Errorf("debug metrics: %w", err)
	}
	h.mux.HandleFunc("GET "+destdebug.Path+"/{authority}", func(w http.ResponseWriter, r *http.Request) {
		ans, err := destinationAnswer(src, r)
		if err != nil {
			reqs.WithLabelValues("destination", "bad_request").Inc()
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		reqs.WithLabelValues("destination", "ok").Inc()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ans)
	})
	return nil
}

// destinationAnswer resolves the query's authority as the Destination
// service does for a caller of caller-namespace.
func destinationAnswer(src destination.Source, r *http.Request) (destdebug.Answer, error) {
	if len(r.URL.RawQuery) > destdebug.MaxQuery {
		return destdebug.Answer{}, fmt.Errorf("query longer than %d bytes", destdebug.MaxQuery)
	}
	path, ns := r.PathValue("authority"), r.URL.Query().Get("caller-namespace")
	a, err := authority.Parse(path)
	if err != nil {
		return destdebug.Answer{}, fmt.Errorf("authority %.256q (want name.namespace.svc.cluster.local:port): %w", path, err)
	}
	if ns != "" {
		if err := authority.ValidLabel(ns); err != nil {
			return destdebug.Answer{}, fmt.Errorf("caller-namespace %.64q: %w", ns, err)
		}
	}
	res, _, release := src.Resolve(a, ns)
	release()
	ans := destdebug.Answer{Path: path, CallerNamespace: ns, Service: res.Service, Exists: res.Endpoints.Exists,
		Labels: res.Endpoints.Labels}
	addrs := make([]*apiv1.WeightedAddr, 0, len(res.Endpoints.Addrs))
	for _, wa := range res.Endpoints.Addrs {
		addrs = append(addrs, wa)
	}
	ans.Endpoints = destdebug.FromAddrs(addrs)
	return ans, nil
}
