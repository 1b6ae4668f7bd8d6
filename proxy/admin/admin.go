// Package admin serves the proxy's admin endpoints: /metrics, /ready, /live
// and /shutdown.
package admin

import (
	"io"
	"log/slog"
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
	// Shutdown is called once, on the first POST /shutdown from a loopback
	// caller that is not the proxy itself.
	Shutdown func()
	// ThroughProxy reports whether a remote address is the local end of a
	// connection this proxy opened (its inbound side dialling the app): such
	// a caller is a mesh peer relayed by us, not a process of the pod.
	ThroughProxy func(netip.AddrPort) bool
	// Logger records who asked for a shutdown, and refusals.
	Logger *slog.Logger
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
	mux.Handle("/shutdown", shutdownHandler(o))
	return mux
}

// shutdownHandler serves POST /shutdown. Only a process of the pod may stop
// the proxy: the admin port is reachable from the network (probes,
// scraping), so the caller must be on loopback; and a loopback caller must
// not be the inbound proxy relaying a mesh peer. The inbound proxy refuses
// any target port that is not the app's, and on Kubernetes dials the pod IP
// rather than loopback; checking the connection's origin here as well
// (rather than a second, loopback-only listener) keeps the one admin port
// that Jobs already call (curl 127.0.0.1:4191/shutdown) while no path
// through the proxy can stop it.
func shutdownHandler(o Options) http.Handler {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var once sync.Once
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodPost) {
			return
		}
		remote, ok := remoteAddr(r)
		if !ok || !remote.Addr().IsLoopback() {
			log.Warn("admin: shutdown refused: not a loopback caller", "remote", r.RemoteAddr)
			http.Error(w, "shutdown is only allowed from loopback", http.StatusForbidden)
			return
		}
		if o.ThroughProxy != nil && o.ThroughProxy(remote) {
			log.Warn("admin: shutdown refused: the request came through this proxy's inbound side", "remote", r.RemoteAddr)
			http.Error(w, "shutdown is not allowed through the proxy", http.StatusForbidden)
			return
		}
		log.Info("admin: shutdown requested", "remote", r.RemoteAddr, "user_agent", r.UserAgent())
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, "shutting down\n")
		if o.Shutdown != nil {
			once.Do(o.Shutdown)
		}
	})
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

func remoteAddr(r *http.Request) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
