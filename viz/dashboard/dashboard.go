// Package dashboard is Trellis's web dashboard (issue 14): an http.Handler
// over the observability views (model.Source, model.Tapper) that the
// `trellis` process serves on loopback, for `trellis dashboard` (Prometheus
// and the aggregated tap API, with the user's own credentials) and `trellis
// demo --dashboard` (the demo's proxies).
//
// Pages are rendered on the server with html/template; the one script
// (assets/app.js, embedded) refreshes pages and renders the live tap stream
// (Server-Sent Events) with textContent only. Everything the page shows can
// come from an attacker (a request's path and authority are chosen by
// whoever sends the request), so nothing is ever inserted as markup, and the
// Content-Security-Policy allows no inline script and no other origin.
package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
)

//go:embed assets templates
var files embed.FS

// DocBase is where the documentation links of the pages point.
const DocBase = "https://github.com/trellis-mesh/trellis/blob/main/docs/"

// CSP is the Content-Security-Policy of every answer: only this origin's
// script and style, no inline script, no framing, no plugins.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Identity is the identity one workload's proxies serve with and when
// their certificate expires.
type Identity struct {
	Resource model.Resource `json:"resource"`
	// Pod is the proxy's pod ("" in local mode).
	Pod      string `json:"pod,omitempty"`
	Identity string `json:"identity"`
	// NotAfter is the certificate's expiry (zero: unknown).
	NotAfter time.Time `json:"notAfter"`
}

// Decision is one row of the inbound authorization decisions
// (trellis_inbound_authz_{allow,deny,audit}_total) of a workload.
type Decision struct {
	Resource model.Resource `json:"resource"`
	// Decision is "allow", "deny" or "audit".
	Decision string `json:"decision"`
	Server   string `json:"server"`
	Route    string `json:"route,omitempty"`
	// Authz is the policy that allowed (allow only); Reason why it was
	// denied (deny only).
	Authz    string  `json:"authz,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	ClientID string  `json:"clientID"`
	TLS      bool    `json:"tls"`
	Count    float64 `json:"count"`
}

// Identities lists the mesh's identities (namespace "" = every namespace).
// The CLI fills it in: from the proxies' metrics (local mode) or from
// Prometheus (Kubernetes).
type Identities interface {
	Identities(ctx context.Context, namespace string) ([]Identity, error)
}

// Decisions lists the inbound authorization decisions counted over window.
type Decisions interface {
	Decisions(ctx context.Context, namespace string, window time.Duration) ([]Decision, error)
}

// Config configures the dashboard. Source is required; a nil Tapper,
// Identities or Decisions leaves its page with an explanation.
type Config struct {
	Source     model.Source
	Tapper     model.Tapper
	Identities Identities
	Decisions  Decisions

	// Local is local mode: workloads have no namespace (Kind "workloads").
	Local bool
	// Window of rates and quantiles (default 1m).
	Window time.Duration
	// Refresh is how often the pages of figures reload (default 5s).
	Refresh time.Duration
	// AllowedHosts are the Host headers answered (the address served,
	// "localhost:PORT"); any other is refused, so a web page cannot reach
	// the dashboard by rebinding its own name to 127.0.0.1. Empty: any.
	AllowedHosts []string
	// MaxTaps bounds the live taps open at once (default 4).
	MaxTaps int
	// Title names the cluster or the demo in the header.
	Title  string
	Logger *slog.Logger
}

// Handler serves the dashboard.
type Handler struct {
	cfg   Config
	mux   *http.ServeMux
	pages *pages
	taps  chan struct{}
}

// New returns the dashboard's handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Source == nil {
		return nil, errors.New("dashboard: no Source")
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Minute
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 5 * time.Second
	}
	if cfg.MaxTaps <= 0 {
		cfg.MaxTaps = 4
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := newPages()
	if err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, mux: http.NewServeMux(), pages: p, taps: make(chan struct{}, cfg.MaxTaps)}
	static, err := fs.Sub(files, "assets")
	if err != nil {
		return nil, err
	}
	h.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	h.mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, static, "favicon.svg")
	})
	h.mux.HandleFunc("GET /{$}", h.overview)
	h.mux.HandleFunc("GET /edges", h.edges)
	h.mux.HandleFunc("GET /routes", h.routes)
	h.mux.HandleFunc("GET /tap", h.tapPage)
	h.mux.HandleFunc("GET /identity", h.identity)
	h.mux.HandleFunc("GET /policy", h.policy)
	h.mux.HandleFunc("GET /api/tap", h.tapStream)
	return h, nil
}

// ServeHTTP sets the security headers, refuses unknown hosts, and routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Security-Policy", CSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cross-Origin-Opener-Policy", "same-origin")
	hd.Set("Cross-Origin-Resource-Policy", "same-origin")
	hd.Set("Cache-Control", "no-store")
	if !h.hostAllowed(r.Host) {
		h.cfg.Logger.Warn("dashboard: refused a request for another host", "host", r.Host)
		http.Error(w, fmt.Sprintf("host %q is not this dashboard's address", r.Host), http.StatusMisdirectedRequest)
		return
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		// Another site's page made the browser ask (an <img> of /api/tap
		// opens a tap with the user's credentials): only the dashboard's
		// own pages and the address bar ("none") may.
		h.cfg.Logger.Warn("dashboard: refused a request another site made", "sec_fetch_site", site, "path", r.URL.Path)
		http.Error(w, "refused: this request came from another site (open the dashboard from the address bar)", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "the dashboard is read-only: "+r.Method+" is not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) hostAllowed(host string) bool {
	if len(h.cfg.AllowedHosts) == 0 {
		return true
	}
	for _, a := range h.cfg.AllowedHosts {
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

// AllowedHosts are the Host headers a browser sends to a dashboard served
// on addr (host:port): the address itself and, on loopback, localhost.
// On an unspecified address (0.0.0.0, ::) the dashboard is reached by
// any address of the host: localhost, the loopback addresses and those
// of its interfaces, each with the port.
func AllowedHosts(addr string) []string {
	return allowedHosts(addr, net.InterfaceAddrs)
}

func allowedHosts(addr string, interfaceAddrs func() ([]net.Addr, error)) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []string{addr}
	}
	out := []string{addr}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
	case ip.IsLoopback():
		out = append(out, net.JoinHostPort("localhost", port))
	case ip.IsUnspecified():
		out = append(out, net.JoinHostPort("localhost", port), net.JoinHostPort("127.0.0.1", port), net.JoinHostPort("::1", port))
		addrs, err := interfaceAddrs()
		if err != nil {
			break // loopback still works
		}
		for _, a := range addrs {
			var ifip net.IP
			switch a := a.(type) {
			case *net.IPNet:
				ifip = a.IP
			case *net.IPAddr:
				ifip = a.IP
			}
			// IPv6 link-local addresses need a zone in the URL; browsers do
			// not send a Host that would match.
			if ifip == nil || ifip.To4() == nil && ifip.IsLinkLocalUnicast() {
				continue
			}
			if h := net.JoinHostPort(ifip.String(), port); !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}
