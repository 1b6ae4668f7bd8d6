// Package admin serves the proxy's admin endpoints: /metrics, /ready, /live,
// /shutdown and /tcp-probe/PORT.
package admin

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

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
	// ProbePorts are the app ports GET /tcp-probe/PORT checks, with
	// ProbeTCP: the injector turns the app's tcpSocket probes into these,
	// since a kubelet connection to the app's port is redirected to the
	// proxy, which accepts it whether or not the app listens.
	ProbePorts map[int]bool
	// ProbeTCP connects to the app's port and closes the connection.
	ProbeTCP func(ctx context.Context, port int) error
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
	if o.ProbeTCP != nil && len(o.ProbePorts) > 0 {
		mux.Handle("/tcp-probe/", tcpProbeHandler(o))
	}
	return mux
}

// probeTimeout bounds one tcp-probe's connect; the kubelet's own timeout
// (the probe's timeoutSeconds, 1 s by default) usually ends it first.
const probeTimeout = 5 * time.Second

// tcpProbeHandler serves GET /tcp-probe/PORT: 200 when the app accepts a
// connection on PORT, 503 when it does not. Only the ports the injector
// listed are probed, so the admin port (reachable from the network) is no
// port scanner.
func tcpProbeHandler(o Options) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !allow(w, r, http.MethodGet, http.MethodHead) {
			return
		}
		arg := strings.TrimPrefix(r.URL.Path, "/tcp-probe/")
		port, err := strconv.Atoi(arg)
		if err != nil || port < 1 || port > 65535 || strconv.Itoa(port) != arg {
			http.Error(w, fmt.Sprintf("tcp-probe: %q is not a port number", arg), http.StatusBadRequest)
			return
		}
		if !o.ProbePorts[port] {
			http.Error(w, fmt.Sprintf("tcp-probe: port %d is not one of the app's probed ports", port), http.StatusNotFound)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), probeTimeout)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := o.ProbeTCP(ctx, port); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, fmt.Sprintf("app port %d: %v\n", port, err))
			return
		}
		io.WriteString(w, "ok\n")
	})
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
