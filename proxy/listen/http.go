//lint:file-ignore SA1019 x/net/http2 ServeConn gives per-connection control (mesh TLS, sniffed conns) that net/http does not expose yet.

package listen

import (
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/http1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// HTTPConfig configures the HTTP servers of one direction.
type HTTPConfig struct {
	Direction string // metrics.Inbound or metrics.Outbound
	Metrics   *metrics.Metrics
	Logger    *slog.Logger
	// Limiter rate-limits the HTTP/2 library's log lines.
	Limiter *ratelog.Limiter
	// Errors renders the HTTP/1 server's own refusals' trellis-proxy-error.
	Errors  *proxyerr.Renderer
	Handler http.Handler
	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout        time.Duration
	MaxConcurrentStreams uint32
}

// HTTP serves detected HTTP/1 and HTTP/2 connections with one handler: the
// strict per-connection proxy/http1 server and x/net/http2's ServeConn.
type HTTP struct {
	h1   *http1.Server
	h2   *http2.Server
	base *http.Server
}

// NewHTTP returns the servers of one direction.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	m, dir := cfg.Metrics, cfg.Direction
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
		h2: &http2.Server{MaxConcurrentStreams: cfg.MaxConcurrentStreams, IdleTimeout: 10 * time.Minute},
		// Graceful shutdown of base sends GOAWAY on every ServeConn connection.
		base: &http.Server{Handler: cfg.Handler, ErrorLog: libLog(cfg.Limiter, m, dir)},
	}
	if err := http2.ConfigureServer(s.base, s.h2); err != nil {
		return nil, err
	}
	return s, nil
}

// Handler is the handler the servers call.
func (s *HTTP) Handler() http.Handler { return s.base.Handler }

// MaxConcurrentStreams is the HTTP/2 streams a client may open at once.
func (s *HTTP) MaxConcurrentStreams() uint32 { return s.h2.MaxConcurrentStreams }

// ServeHTTP1 serves an HTTP/1 connection; ctx is every request's base.
func (s *HTTP) ServeHTTP1(ctx context.Context, c net.Conn) { s.h1.ServeConn(ctx, c) }

// ServeHTTP2 serves an HTTP/2 connection; ctx is every request's base.
func (s *HTTP) ServeHTTP2(ctx context.Context, c net.Conn) {
	s.h2.ServeConn(c, &http2.ServeConnOpts{Context: ctx, BaseConfig: s.base, Handler: s.base.Handler})
}

// Shutdown starts a drain: idle HTTP/1 connections close, HTTP/2 clients
// get GOAWAY. wg is done when the HTTP/2 drain ends (or ctx does).
func (s *HTTP) Shutdown(ctx context.Context, wg *sync.WaitGroup) {
	s.h1.Shutdown()
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.base.Shutdown(ctx) }()
}

// Close closes the HTTP/1 connections still open after a drain.
func (s *HTTP) Close() { s.h1.Close() }

// libLog is the ErrorLog of the HTTP/2 server: x/net/http2 prints a
// misbehaving client's protocol errors there, which go to slog at debug,
// once per cause per interval, and to trellis_protocol_errors_total.
func libLog(l *ratelog.Limiter, m *metrics.Metrics, dir string) *log.Logger {
	return ratelog.NewLogLogger(&ratelog.LibWriter{
		Limiter: l, Scope: dir, Args: []any{"direction", dir},
		Count: func(cause string) { m.ProtocolError(dir, cause) },
	})
}
