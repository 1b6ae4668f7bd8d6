// Package admin is the controller's admin HTTP server: /metrics, /ready and
// /live.
package admin

import (
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves the admin endpoints.
type Handler struct {
	mux   *http.ServeMux
	ready atomic.Bool
	check atomic.Pointer[func() error]
}

// New returns a handler exposing reg at /metrics.
func New(reg *prometheus.Registry) *Handler {
	h := &Handler{mux: http.NewServeMux()}
	h.mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	h.mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("live\n"))
	})
	h.mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !h.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if f := h.check.Load(); f != nil {
			if err := (*f)(); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		w.Write([]byte("ready\n"))
	})
	return h
}

// SetReady flips /ready between 200 and 503.
func (h *Handler) SetReady(v bool) { h.ready.Store(v) }

// SetCheck adds a condition /ready evaluates on every request while ready
// (e.g. the issuer can still sign); its error is the 503's body.
func (h *Handler) SetCheck(f func() error) { h.check.Store(&f) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }
