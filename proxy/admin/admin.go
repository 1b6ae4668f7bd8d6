// Package admin serves the proxy's admin endpoints: /metrics, /ready, /live
// and /shutdown.
package admin

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configures Handler.
type Options struct {
	Gatherer prometheus.Gatherer
	// Ready reports readiness and, when not ready, the reason shown in the body.
	Ready func() (bool, string)
	// Shutdown is called once, on the first POST /shutdown from a loopback peer.
	Shutdown func()
}

// Handler returns the admin HTTP handler.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	g := o.Gatherer
	if g == nil {
		g = prometheus.NewRegistry()
	}
	metrics := promhttp.HandlerFor(g, promhttp.HandlerOpts{})
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		metrics.ServeHTTP(w, r)
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		ok, reason := true, ""
		if o.Ready != nil {
			ok, reason = o.Ready()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ok {
			if reason == "" {
				reason = "not ready"
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, reason+"\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "live\n")
	})
	var once sync.Once
	mux.HandleFunc("/shutdown", func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodPost) {
			return
		}
		// Only the pod itself may stop the proxy: the admin port is reachable
		// from the network (probes, scraping).
		if !fromLoopback(r) {
			http.Error(w, "shutdown is only allowed from loopback", http.StatusForbidden)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "shutting down\n")
		if o.Shutdown != nil {
			once.Do(o.Shutdown)
		}
	})
	return mux
}

func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	allowed := methods[0]
	for _, m := range methods[1:] {
		allowed += ", " + m
	}
	w.Header().Set("Allow", allowed)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return a.Unmap().IsLoopback()
}
