// Package outbound is the app-facing listener: it detects the protocol of
// each connection, routes HTTP requests to a balanced endpoint over one
// multiplexed mTLS HTTP/2 connection per peer proxy (retrying requests that
// provably never left), and carries opaque TCP over the mesh transport.
package outbound

//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/http1"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Modes of the outbound listener.
const (
	ModeExplicit    = "explicit"
	ModeTransparent = "transparent"
)

// Destination is what the control plane knows about an authority.
type Destination struct {
	// Exists is false when the control plane does not know the authority.
	Exists   bool
	Balancer *balance.Balancer
}

// ResolveFunc looks an authority ("name.ns:port" or "ip:port") up.
type ResolveFunc func(ctx context.Context, authority string) (Destination, error)

// Config configures the outbound proxy.
type Config struct {
	Mode           string
	Store          *meshtls.Store
	Resolve        ResolveFunc
	Metrics        *metrics.Metrics
	Logger         *slog.Logger
	DetectTimeout  time.Duration
	RequestTimeout time.Duration // 0: none
	DialTimeout    time.Duration // default 5s
	OpaquePorts    map[uint16]bool
	// MeshTransport is the HTTP/2 client used on mesh connections:
	// MeshTransportLean (proxy/meshh2, default) or MeshTransportXNet.
	MeshTransport string
	// OrigDst recovers a connection's original destination (transparent
	// mode); default origdst.Get.
	OrigDst func(net.Conn) (netip.AddrPort, error)

	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout time.Duration
}

// Proxy is the outbound proxy.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics.Metrics
	dialer  *dialer
	pool    *pool
	h1      *http.Transport // plain HTTP/1.1 to non-meshed endpoints
	h1srv   *http1.Server   // the app's HTTP/1 requests
	h2srv   *http2.Server
	h2base  *http.Server
	tracker forward.Tracker
	errs    *proxyerr.Renderer // the responses this proxy gives itself

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	lns    []net.Listener
}

// New builds an outbound proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Mode == "" {
		cfg.Mode = ModeExplicit
	}
	if cfg.Mode != ModeExplicit && cfg.Mode != ModeTransparent {
		return nil, errors.New("outbound: mode must be explicit or transparent, got " + strconv.Quote(cfg.Mode))
	}
	if cfg.Store == nil || cfg.Resolve == nil || cfg.Metrics == nil {
		return nil, errors.New("outbound: Store, Resolve and Metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.OrigDst == nil {
		cfg.OrigDst = origdst.Get
	}
	switch cfg.MeshTransport {
	case "":
		cfg.MeshTransport = MeshTransportLean
	case MeshTransportXNet, MeshTransportLean:
	default:
		return nil, errors.New("outbound: mesh transport must be xnet or lean, got " + strconv.Quote(cfg.MeshTransport))
	}
	d := &dialer{
		store: cfg.Store, metrics: cfg.Metrics, timeout: cfg.DialTimeout,
		net: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics, dialer: d, pool: newPool(d, cfg.MeshTransport),
		h1: &http.Transport{
			DialContext:           d.net.DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		},
		h2srv: &http2.Server{MaxConcurrentStreams: 1000, IdleTimeout: 10 * time.Minute},
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	limiter := ratelog.New(cfg.Logger, 0)
	p.errs = &proxyerr.Renderer{Direction: metrics.Outbound, Identity: cfg.Store.LocalIdentity().String(), Log: limiter}
	p.h1srv = &http1.Server{
		Handler:           p,
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       5 * time.Minute,
		Logger:            cfg.Logger,
		OnError: func(status int, reason string) {
			p.m.HTTP1Error(metrics.Outbound, metrics.SideClient, reason)
			proxyerr.CountRefusal(p.m, metrics.Outbound, status)
		},
		ProxyError: p.errs.HeaderFor,
	}
	// Graceful shutdown of h2base sends GOAWAY on every ServeConn connection.
	p.h2base = &http.Server{Handler: p, ErrorLog: libLog(limiter, cfg.Metrics)}
	if err := http2.ConfigureServer(p.h2base, p.h2srv); err != nil {
		return nil, err
	}
	return p, nil
}

type connInfoKey struct{}

// connInfo is what a request needs to know about its connection.
type connInfo struct {
	orig netip.AddrPort // transparent mode
	raw  net.Conn
}

// Serve accepts connections on ln until it is closed.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	p.lns = append(p.lns, ln)
	p.mu.Unlock()
	return p.tracker.Serve(ln, func() bool { return p.ctx.Err() != nil }, p.handle)
}

// Shutdown drains: listeners stop accepting, HTTP/2 clients get GOAWAY, idle
// HTTP/1 connections close, and in-flight work gets until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	for _, ln := range p.lns {
		_ = ln.Close()
	}
	p.mu.Unlock()
	p.cancel()
	var wg sync.WaitGroup
	p.h1srv.Shutdown()
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.h2base.Shutdown(ctx) }()
	err := p.tracker.Wait(ctx)
	wg.Wait()
	p.h1srv.Close()
	p.pool.shutdown(ctx)
	p.h1.CloseIdleConnections()
	return err
}

func (p *Proxy) handle(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	info := &connInfo{raw: c}
	if p.cfg.Mode == ModeTransparent {
		orig, err := p.cfg.OrigDst(c)
		if err != nil {
			p.log.Warn("outbound: no original destination", "remote", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		info.orig = orig
		if p.cfg.OpaquePorts[orig.Port()] {
			p.m.Detect(metrics.Outbound, "opaque", "skipped")
			p.opaqueTransparent(c, info)
			return
		}
	}
	res, err := detect.Detect(c, p.cfg.DetectTimeout)
	if err != nil {
		p.m.Detect(metrics.Outbound, "opaque", "error")
		_ = c.Close()
		return
	}
	result := "ok"
	if res.TimedOut {
		result = "timeout"
	}
	p.m.Detect(metrics.Outbound, res.Protocol.String(), result)
	conn := forward.WithCloseWrite(res.Conn, c)
	switch res.Protocol {
	case detect.HTTP1:
		p.h1srv.ServeConn(context.WithValue(context.Background(), connInfoKey{}, info), conn)
	case detect.HTTP2:
		p.h2srv.ServeConn(conn, &http2.ServeConnOpts{
			Context:    context.WithValue(context.Background(), connInfoKey{}, info),
			BaseConfig: p.h2base,
			Handler:    p,
		})
	default:
		if p.cfg.Mode == ModeTransparent {
			p.opaqueTransparent(conn, info)
			return
		}
		// Explicit mode has no destination for raw bytes: the app must use
		// HTTP or CONNECT.
		p.log.Debug("outbound: opaque connection in explicit mode refused", "remote", c.RemoteAddr().String())
		_ = c.Close()
	}
}

// libLog is the ErrorLog of the HTTP/2 server: x/net/http2 prints a
// misbehaving client's protocol errors there, which go to slog at debug,
// once per cause per interval, and to trellis_protocol_errors_total.
func libLog(l *ratelog.Limiter, m *metrics.Metrics) *log.Logger {
	return ratelog.NewLogLogger(&ratelog.LibWriter{
		Limiter: l, Scope: metrics.Outbound, Args: []any{"direction", metrics.Outbound},
		Count: func(cause string) { m.ProtocolError(metrics.Outbound, cause) },
	})
}
