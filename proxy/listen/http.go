package listen

import (
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/http1"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// HTTPConfig configures the HTTP servers of one direction.
type HTTPConfig struct {
	Direction string // metrics.Inbound or metrics.Outbound
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// Limiter rate-limits the log lines of HTTP/2 peers' protocol errors.
	Limiter *ratelog.Limiter
	// Errors renders the HTTP/1 server's own refusals' trellis-proxy-error.
	Errors  *proxyerr.Renderer
	Handler http.Handler
	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout        time.Duration
	MaxConcurrentStreams uint32
}

// HTTP serves detected HTTP/1 and HTTP/2 connections with one handler: the
// strict per-connection proxy/http1 server and proxy/meshh2's server, for
// the app's prior-knowledge h2c as for the mesh hop.
type HTTP struct {
	h1         *http1.Server
	handler    http.Handler
	h2c        http.Handler // handler behind an app's h2c (see NewHTTP)
	maxStreams uint32
	log        *slog.Logger
	// libLog takes the HTTP/2 peers' protocol errors, as x/net's
	// ErrorLog did: slog at debug, rate-limited, and counted.
	libLog *log.Logger

	mu      sync.Mutex
	closing bool
	h2      map[*meshh2.ServerConn]struct{} // live HTTP/2 conns, for drain
}

// NewHTTP returns the servers of one direction.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	m, dir := cfg.Metrics, cfg.Direction
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &HTTP{
		h1: &http1.Server{
			Handler:           cfg.Handler,
			ReadHeaderTimeout: cfg.HeaderTimeout,
			IdleTimeout:       5 * time.Minute,
			Logger:            cfg.Logger,
			OnError: func(status int, reason string) {
				m.HTTP1Error(dir, metrics.SideClient, reason)
				proxyerr.CountRefusal(m, dir, status)
			},
			ProxyError: cfg.Errors.HeaderFor,
		},
		handler:    cfg.Handler,
		h2c:        dropExpectContinue(cfg.Handler),
		maxStreams: cfg.MaxConcurrentStreams,
		log:        cfg.Logger,
		libLog:     libLog(cfg.Limiter, m, dir),
		h2:         make(map[*meshh2.ServerConn]struct{}),
	}
	return s, nil
}

// dropExpectContinue removes an HTTP/2 client's Expect: 100-continue, as
// x/net's server did before meshh2 served the app's h2c: the server sends
// 100 Continue itself when the handler first reads the body, and the
// Expect does not travel on (docs/proxy.md, "Expect: 100-continue").
func dropExpectContinue(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if httpguts.HeaderValuesContainsToken(r.Header["Expect"], "100-continue") {
			r.Header.Del("Expect")
		}
		h.ServeHTTP(w, r)
	})
}

// Handler is the handler the servers call.
func (s *HTTP) Handler() http.Handler { return s.handler }

// ServeHTTP1 serves an HTTP/1 connection; ctx is every request's base.
func (s *HTTP) ServeHTTP1(ctx context.Context, c net.Conn) { s.h1.ServeConn(ctx, c) }

// ServeHTTP2 serves an app's prior-knowledge HTTP/2 (h2c) connection; ctx
// is every request's base (values only: not cancelled by Shutdown, so
// in-flight requests finish during a drain).
func (s *HTTP) ServeHTTP2(ctx context.Context, c net.Conn) {
	s.serveH2(ctx, c, meshh2.ServerOptions{Handler: s.h2c, AcceptConnect: true})
}

// ServeMesh serves a mesh peer's HTTP/2 connection (mesh TLS, ALPN
// negotiated); ctx as for ServeHTTP2.
func (s *HTTP) ServeMesh(ctx context.Context, c net.Conn) {
	s.serveH2(ctx, c, meshh2.ServerOptions{Handler: s.handler})
}

func (s *HTTP) serveH2(ctx context.Context, c net.Conn, opts meshh2.ServerOptions) {
	opts.BaseContext = ctx
	opts.MaxConcurrentStreams = s.maxStreams
	opts.Logger = s.log
	opts.ProtocolError = func(err error) {
		s.libLog.Printf("http2: server connection error from %s: %v", c.RemoteAddr(), err)
	}
	sc := meshh2.NewServerConn(c, opts)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		_ = c.Close()
		return
	}
	s.h2[sc] = struct{}{}
	s.mu.Unlock()
	if err := sc.Serve(); err != nil {
		s.log.Debug("HTTP/2 connection ended", "remote", c.RemoteAddr().String(), "err", err)
	}
	s.mu.Lock()
	delete(s.h2, sc)
	s.mu.Unlock()
}

// Shutdown starts a drain: idle HTTP/1 connections close, HTTP/2 clients
// get GOAWAY. wg is done when the HTTP/2 drain ends (or ctx does).
func (s *HTTP) Shutdown(ctx context.Context, wg *sync.WaitGroup) {
	s.h1.Shutdown()
	s.mu.Lock()
	s.closing = true
	conns := make([]*meshh2.ServerConn, 0, len(s.h2))
	for sc := range s.h2 {
		conns = append(conns, sc)
	}
	s.mu.Unlock()
	for _, sc := range conns {
		wg.Add(1)
		go func() { defer wg.Done(); _ = sc.Shutdown(ctx) }()
	}
}

// Close closes the HTTP/1 connections still open after a drain.
func (s *HTTP) Close() { s.h1.Close() }

// libLog takes a misbehaving HTTP/2 client's protocol errors, in the lines
// x/net's server printed to its ErrorLog: they go to slog at debug, once
// per cause per interval, and to trellis_protocol_errors_total.
func libLog(l *ratelog.Limiter, m *metrics.Metrics, dir string) *log.Logger {
	return ratelog.NewLogLogger(&ratelog.LibWriter{
		Limiter: l, Scope: dir, Args: []any{"direction", dir},
		Count: func(cause string) { m.ProtocolError(dir, cause) },
	})
}
