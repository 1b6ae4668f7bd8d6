// Package outbound is the app-facing listener: it detects the protocol of
// each connection, routes HTTP requests to a balanced endpoint over one
// multiplexed mTLS HTTP/2 connection per peer proxy (retrying requests that
// provably never left), and carries opaque TCP over the mesh transport.
package outbound

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/fault"
	"github.com/trellis-mesh/trellis/proxy/h2pool"
	"github.com/trellis-mesh/trellis/proxy/listen"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/mirror"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/retry"
	"github.com/trellis-mesh/trellis/proxy/route"
	"github.com/trellis-mesh/trellis/proxy/tunnel"
	"github.com/trellis-mesh/trellis/proxy/upstream"
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
	// OrigDst recovers a connection's original destination (transparent
	// mode); default origdst.Get.
	OrigDst func(net.Conn) (netip.AddrPort, error)

	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout time.Duration
	// Routes is the route table the route stage consults; nil: none.
	Routes route.Table
	// RouteMetrics counts requests per route, faults and mirrored
	// copies; nil: not counted.
	RouteMetrics *metrics.Routes
	// Limit enforces the services' outbound limits (RouteConfig.limit,
	// proxy/ratelimit.Outbound) before a request is balanced; nil: none.
	Limit route.Limiter
	// Tap is the tap stage (proxy/tap); nil: none.
	Tap pipeline.Layer
	// Trace is the tracing stage (proxy/trace); nil: none.
	Trace pipeline.Layer
}

// Proxy is the outbound proxy.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	m        *metrics.Metrics
	dialer   *dialer
	pool     *h2pool.Pool[poolKey]
	h1       *http.Transport // plain HTTP/1.1 to non-meshed endpoints
	route    *route.Stage
	fault    *fault.Stage
	mirror   *mirror.Stage
	mirrors  *pipeline.Observe // the chain of mirrored copies
	upstream *upstream.Stage
	tunnel   *tunnel.Stage
	handler  http.Handler // the request pipeline (chain)
	srv      *listen.HTTP // the app's HTTP/1 and HTTP/2 requests
	ln       *listen.Listener
	errs     *proxyerr.Renderer // the responses this proxy gives itself
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
	if cfg.Tap == nil {
		cfg.Tap = pipeline.Identity
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.OrigDst == nil {
		cfg.OrigDst = origdst.Get
	}
	d := &dialer{
		store: cfg.Store, metrics: cfg.Metrics, timeout: cfg.DialTimeout,
		net: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics, dialer: d, pool: newPool(d),
		h1: &http.Transport{
			DialContext:           d.net.DialContext,
			MaxIdleConns:          1024,
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true,
		},
	}
	limiter := ratelog.New(cfg.Logger, 0)
	p.errs = &proxyerr.Renderer{Direction: metrics.Outbound, Identity: cfg.Store.LocalIdentity().String(), Log: limiter}
	p.route = &route.Stage{
		Transparent: cfg.Mode == ModeTransparent, Resolve: p.resolveDst, Table: cfg.Routes, Metrics: cfg.RouteMetrics,
		Limit: cfg.Limit,
	}
	p.fault = &fault.Stage{Metrics: cfg.RouteMetrics}
	p.mirror = mirror.New(mirror.Config{Send: p.sendMirror, Metrics: cfg.RouteMetrics})
	p.upstream = &upstream.Stage{
		Metrics: cfg.Metrics, Errors: p.errs, Log: cfg.Logger,
		Mesh: p.meshConn, Plain: p.h1, Unprocessed: isUnprocessed,
		Budgets: retry.NewBudgets(0), Replay: retry.NewBytes(retry.DefaultReplayBytes),
	}
	p.tunnel = &tunnel.Stage{Route: p.route, Open: p.openStream, Splice: p.splice}
	p.handler = p.chain()
	p.mirrors = p.mirrorChain()
	var err error
	p.srv, err = listen.NewHTTP(listen.HTTPConfig{
		Direction: metrics.Outbound, Metrics: cfg.Metrics, Logger: cfg.Logger, Limiter: limiter,
		Errors: p.errs, Handler: p.handler, HeaderTimeout: cfg.HeaderTimeout, MaxConcurrentStreams: 1000,
	})
	if err != nil {
		return nil, err
	}
	lc := listen.Config{
		Direction: metrics.Outbound, Metrics: cfg.Metrics, Logger: cfg.Logger,
		DetectTimeout: cfg.DetectTimeout, Dispatch: p.dispatch,
	}
	if cfg.Mode == ModeTransparent {
		lc.OrigDst, lc.Before = cfg.OrigDst, p.before
	}
	p.ln = listen.New(lc)
	return p, nil
}

// Serve accepts connections on ln until it is closed.
func (p *Proxy) Serve(ln net.Listener) error { return p.ln.Serve(ln) }

// Shutdown drains: listeners stop accepting, HTTP/2 clients get GOAWAY, idle
// HTTP/1 connections close, and in-flight work gets until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.ln.Close()
	var wg sync.WaitGroup
	p.srv.Shutdown(ctx, &wg)
	err := p.ln.Wait(ctx)
	wg.Wait()
	p.srv.Close()
	p.pool.Shutdown(ctx)
	p.h1.CloseIdleConnections()
	return err
}

// before serves a transparent connection to an opaque port without
// detection.
func (p *Proxy) before(c net.Conn, orig netip.AddrPort) bool {
	if !p.cfg.OpaquePorts[orig.Port()] {
		return false
	}
	p.m.Detect(metrics.Outbound, "opaque", "skipped")
	p.opaqueTransparent(c, &pipeline.Conn{Raw: c, Orig: orig})
	return true
}

func (p *Proxy) dispatch(c listen.Conn) {
	info := &pipeline.Conn{Raw: c.Raw, Orig: c.Orig}
	switch c.Detected.Protocol {
	case detect.HTTP1:
		p.srv.ServeHTTP1(pipeline.WithConn(context.Background(), info), c.Conn)
	case detect.HTTP2:
		p.srv.ServeHTTP2(pipeline.WithConn(context.Background(), info), c.Conn)
	default:
		if p.cfg.Mode == ModeTransparent {
			p.opaqueTransparent(c.Conn, info)
			return
		}
		// Explicit mode has no destination for raw bytes: the app must use
		// HTTP or CONNECT.
		p.log.Debug("outbound: opaque connection in explicit mode refused", "remote", c.Raw.RemoteAddr().String())
		_ = c.Raw.Close()
	}
}
