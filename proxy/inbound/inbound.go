// Package inbound is the mesh-facing listener: it terminates mesh TLS
// (recording the client's identity), dispatches on ALPN (multiplexed HTTP/2
// or opaque transport streams), restores HTTP/1 towards the app, and passes
// plain-text callers and the app's own TLS through.
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/internal/routingname"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/app"
	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/h2pool"
	"github.com/trellis-mesh/trellis/proxy/listen"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/policy"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/selfconn"
	"github.com/trellis-mesh/trellis/proxy/transport"
)

// Config configures the inbound proxy.
type Config struct {
	Store   *meshtls.Store
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// AppAddr is where traffic goes when no target port is known.
	AppAddr string
	// Transparent: the default target is AppIP:<original destination
	// port> (SO_ORIGINAL_DST) instead of AppAddr.
	Transparent bool
	// AppIP is the host dialled in transparent mode (the pod's IP, so a
	// process listening only on loopback is not reachable from the mesh);
	// default 127.0.0.1.
	AppIP string
	// AppPorts are further ports of AppAddr's host that mesh peers may
	// name in explicit mode; AppAddr's own port always may.
	AppPorts []uint16
	// OwnPorts returns the ports of every listener of this proxy (inbound,
	// outbound, admin, tap): never a target, whatever a peer names.
	OwnPorts func() []uint16
	// DefaultPolicy is PolicyAllUnauthenticated (default) or
	// PolicyAllAuthenticated.
	DefaultPolicy string
	// SelfConns, when set, records the connections dialled to the app, so
	// that the admin server can refuse a request that came through us.
	SelfConns        *selfconn.Set
	DetectTimeout    time.Duration
	HandshakeTimeout time.Duration // default 10s
	DialTimeout      time.Duration // default 5s
	OpaquePorts      map[uint16]bool
	OrigDst          func(net.Conn) (netip.AddrPort, error)
	// ClusterDomain is this cluster's DNS domain (default cluster.local):
	// a TLS server name <port>.<svc>.<ns>.svc.<ClusterDomain> is a mesh
	// client's, come through a multicluster gateway (internal/routingname).
	ClusterDomain string

	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout time.Duration
	// Authorizer decides whether a caller may reach the app; default:
	// DefaultPolicy's (policy.Default).
	Authorizer policy.Authorizer
	// Tap is the tap stage (proxy/tap); nil: none.
	Tap pipeline.Layer
	// Trace is the tracing stage (proxy/trace); nil: none.
	Trace pipeline.Layer
	// RateLimit is the rate and concurrency limit stage
	// (proxy/ratelimit), after authz; nil: none.
	RateLimit pipeline.Layer
}

// Proxy is the inbound proxy.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics.Metrics
	tlsConf *tls.Config
	dialer  net.Dialer
	h1      *forward.H1Client    // HTTP/1.1 towards the app
	h2c     *h2pool.Pool[string] // prior-knowledge HTTP/2 towards the app, by address
	srv     *listen.HTTP         // plain HTTP/1 and HTTP/2 (h2c) callers
	ln      *listen.Listener
	targets *appTargets
	// authorizer is the authz stage's policy.
	authorizer policy.Authorizer
	app        *app.Stage
	// refuseLog rate-limits refusal log lines per caller and reason.
	refuseLog *ratelog.Limiter

	errs *proxyerr.Renderer // the responses this proxy gives itself
}

// New builds an inbound proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Store == nil || cfg.Metrics == nil {
		return nil, errors.New("inbound: Store and Metrics are required")
	}
	if cfg.AppAddr == "" && !cfg.Transparent {
		return nil, errors.New("inbound: AppAddr is required outside transparent mode")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.OrigDst == nil {
		cfg.OrigDst = origdst.Get
	}
	def, err := policy.NewDefaultIn(cfg.DefaultPolicy, cfg.Store.LocalIdentity().TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("inbound: %w", err)
	}
	cfg.DefaultPolicy = def.Policy
	if cfg.Authorizer == nil {
		cfg.Authorizer = def
	}
	if cfg.Tap == nil {
		cfg.Tap = pipeline.Identity
	}
	targets, err := newAppTargets(cfg)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics,
		targets: targets, refuseLog: ratelog.New(cfg.Logger, 0), authorizer: cfg.Authorizer,
		tlsConf: cfg.Store.ServerConfig([]string{transport.ALPNHTTP, transport.ALPNOpaque}),
		// The app is in the same pod (or on the same host): no keepalive,
		// which would cost four setsockopt calls per connection.
		dialer: net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1},
	}
	limiter := ratelog.New(cfg.Logger, 0)
	p.errs = &proxyerr.Renderer{Direction: metrics.Inbound, Identity: cfg.Store.LocalIdentity().String(), Log: limiter}
	p.h1 = &forward.H1Client{
		Dialer:                p.dialer,
		Dial:                  p.dialApp,
		MaxIdlePerAddr:        256,
		IdleTimeout:           90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	// Prior-knowledge HTTP/2 to the app with the mesh's own client: one
	// multiplexed connection per app address, never pinged.
	p.h2c = h2pool.New(h2pool.Config[string]{
		Dial:        func(ctx context.Context, addr string) (net.Conn, error) { return p.dialApp(ctx, "tcp", addr) },
		DialTimeout: cfg.DialTimeout,
		Options:     func(string) meshh2.ClientOptions { return h2pool.AppOptions },
	})
	p.app = &app.Stage{Metrics: cfg.Metrics, H1: p.h1, H2: p.h2cConn, Dial: p.dialApp}
	p.srv, err = listen.NewHTTP(listen.HTTPConfig{
		Direction: metrics.Inbound, Metrics: cfg.Metrics, Logger: cfg.Logger, Limiter: limiter,
		Errors: p.errs, Handler: p.chain(), HeaderTimeout: cfg.HeaderTimeout,
		// One connection per peer proxy carries all of its requests.
		MaxConcurrentStreams: 2000,
	})
	if err != nil {
		return nil, err
	}
	lc := listen.Config{
		Direction: metrics.Inbound, Metrics: cfg.Metrics, Logger: cfg.Logger,
		DetectTimeout: cfg.DetectTimeout, Dispatch: p.dispatch,
	}
	if cfg.Transparent {
		lc.OrigDst, lc.Before = cfg.OrigDst, p.before
	}
	p.ln = listen.New(lc)
	return p, nil
}

type connInfoKey struct{}

// connInfo is what a request needs to know about its connection.
type connInfo struct {
	peer   string // client identity proven by mesh TLS, "" otherwise
	tls    bool
	target string // default app address
	// targetErr is why the original destination may not be the target
	// (one of our own ports): refused once the caller is known, unless a
	// mesh peer names an allowed port.
	targetErr error
	raw       net.Conn
}

// conn is info as the pipeline knows a connection.
func (info *connInfo) conn() *pipeline.Conn {
	return &pipeline.Conn{Raw: info.raw, Peer: info.peer, TLS: info.tls, Target: info.target, TargetErr: info.targetErr}
}

// Serve accepts connections on ln until it is closed.
func (p *Proxy) Serve(ln net.Listener) error { return p.ln.Serve(ln) }

// Shutdown drains: listeners stop accepting, HTTP/2 peers get GOAWAY, idle
// HTTP/1 connections close, and in-flight work gets until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.ln.Close()
	var wg sync.WaitGroup
	p.srv.Shutdown(ctx, &wg)
	err := p.ln.Wait(ctx)
	wg.Wait()
	p.srv.Close()
	p.h1.CloseIdleConnections(true)
	p.h2c.Shutdown(ctx)
	return err
}

// h2cConn is the app stage's HTTP/2 connection to the app at addr.
func (p *Proxy) h2cConn(ctx context.Context, addr string) (http.RoundTripper, error) {
	return p.h2c.Get(ctx, addr)
}

// dialApp opens a connection to the app, recorded in SelfConns.
func (p *Proxy) dialApp(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.cfg.SelfConns.Dial(ctx, &p.dialer, network, addr)
}

// connInfoOf is what the listener knows of a connection: its default
// target (the original destination's port in transparent mode).
func (p *Proxy) connInfoOf(raw net.Conn, orig netip.AddrPort) *connInfo {
	info := &connInfo{target: p.cfg.AppAddr, raw: raw}
	if p.cfg.Transparent {
		// A caller that dialled one of our own ports on the pod IP is
		// refused once detection (and mesh TLS) tell who it is.
		info.target, info.targetErr = p.targets.forPort(orig.Port())
	}
	return info
}

// before serves a transparent connection to an opaque port without
// detection when the policy lets callers without mesh TLS in. Otherwise
// (all-authenticated, deny, a Server's policy) opaque ports are detected
// all the same: mesh TLS is served, anything else decided in dispatch.
func (p *Proxy) before(c net.Conn, orig netip.AddrPort) bool {
	if !p.cfg.OpaquePorts[orig.Port()] || !p.wouldAllowPlain(c, orig.Port()) {
		return false
	}
	info := p.connInfoOf(c, orig)
	if info.targetErr != nil {
		return false
	}
	p.m.Detect(metrics.Inbound, "opaque", "skipped")
	if err := p.plainRefusal(info); err != nil {
		// The policy changed since wouldAllowPlain.
		p.refused(info.conn(), metrics.RefusedOpaque, err)
		_ = c.Close()
		return true
	}
	p.opaqueToApp(c, info, info.target, info.target)
	return true
}

func (p *Proxy) dispatch(lc listen.Conn) {
	info := p.connInfoOf(lc.Raw, lc.Orig)
	res, conn := lc.Detected, lc.Conn
	if !p.isMeshTLS(res) && !isHTTP(res.Protocol) {
		// HTTP callers get a 403 from the authz stage; the others are closed.
		if err := p.plainRefusal(info); err != nil {
			p.refused(info.conn(), metrics.RefusedOpaque, err)
			_ = lc.Raw.Close()
			return
		}
	}
	switch res.Protocol {
	case detect.TLS:
		// Any SNI in the mesh's identity form is a mesh peer: terminate it
		// with our own certificate even when it asks for another identity,
		// so that the caller refuses us with a clear wrong-identity error
		// instead of our app answering a handshake it cannot understand.
		if p.isMeshSNI(res.SNI) {
			p.serveMesh(conn, info)
			return
		}
		// The app's own TLS: not ours to terminate.
		p.opaqueToApp(conn, info, info.target, info.target)
	case detect.HTTP1:
		p.srv.ServeHTTP1(context.WithValue(context.Background(), connInfoKey{}, info), conn)
	case detect.HTTP2:
		p.serveH2(conn, info)
	default:
		p.opaqueToApp(conn, info, info.target, info.target)
	}
}

func (p *Proxy) serveH2(c net.Conn, info *connInfo) {
	// Not cancelled by Shutdown: in-flight requests finish during a drain.
	p.srv.ServeHTTP2(context.WithValue(context.Background(), connInfoKey{}, info), c)
}

// serveMeshH2 serves a mesh peer's HTTP/2 connection (proxy/meshh2).
func (p *Proxy) serveMeshH2(c net.Conn, info *connInfo) {
	// Not cancelled by Shutdown: in-flight requests finish during a drain.
	p.srv.ServeMesh(context.WithValue(context.Background(), connInfoKey{}, info), c)
}

// serveMesh terminates mesh TLS and dispatches on ALPN.
func (p *Proxy) serveMesh(c net.Conn, info *connInfo) {
	tc := tls.Server(c, p.tlsConf)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		p.m.HandshakeError(metrics.Inbound, meshtls.HandshakeErrorReason(err))
		p.log.Debug("inbound: mesh TLS handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	cs := tc.ConnectionState()
	id, ok := meshtls.PeerIdentity(cs)
	if !ok {
		p.m.HandshakeError(metrics.Inbound, meshtls.ReasonNoCertificate)
		_ = tc.Close()
		return
	}
	p.m.Handshake(metrics.Inbound, cs.CurveID)
	mi := &connInfo{peer: id.String(), tls: true, target: info.target, targetErr: info.targetErr, raw: info.raw}
	switch cs.NegotiatedProtocol {
	case transport.ALPNHTTP:
		p.serveMeshH2(tc, mi)
	case transport.ALPNOpaque:
		_ = tc.SetReadDeadline(time.Now().Add(p.cfg.HandshakeTimeout))
		h, err := transport.ReadHeader(tc)
		_ = tc.SetReadDeadline(time.Time{})
		if err != nil {
			p.log.Debug("inbound: bad transport header", "peer", mi.peer, "err", err)
			_ = tc.Close()
			return
		}
		target := mi.target
		if h.Port == 0 && mi.targetErr != nil {
			p.refused(mi.conn(), metrics.RefusedOpaque, mi.targetErr)
			_ = tc.Close()
			return
		}
		if h.Port != 0 {
			if target, err = p.targets.forPort(h.Port); err != nil {
				p.refused(mi.conn(), metrics.RefusedOpaque, err)
				_ = tc.Close()
				return
			}
		}
		c := policy.Caller{Identity: mi.peer, TLS: true, ClientIP: clientIP(mi.raw), Port: forward.PortOf(target)}
		if err := p.authorizer.Authorize(context.Background(), c, nil); err != nil {
			p.refused(mi.conn(), metrics.RefusedOpaque, err)
			_ = tc.Close()
			return
		}
		dst := h.Authority
		if dst == "" {
			dst = target
		}
		p.opaqueToApp(tc, mi, target, dst)
	default:
		p.m.HandshakeError(metrics.Inbound, meshtls.ReasonProtocol)
		_ = tc.Close()
	}
}

// opaqueToApp splices a stream to the app and records TCP metrics.
func (p *Proxy) opaqueToApp(c net.Conn, info *connInfo, target, dst string) {
	defer c.Close()
	tm := p.m.TCP(metrics.Key{Direction: metrics.Inbound, DstService: dst, PeerIdentity: info.peer, TLS: info.tls})
	tm.Open()
	app, err := p.dialApp(context.Background(), "tcp", target)
	if err != nil {
		tm.Close(forward.Errno(err))
		p.log.Debug("inbound: connecting to app", "target", target, "err", err)
		return
	}
	fromPeer, toPeer, err := forward.Splice(c, app)
	tm.Read(fromPeer)
	tm.Write(toPeer)
	tm.Close(forward.Errno(err))
}

// isMeshTLS reports whether a detected stream is mesh TLS.
func (p *Proxy) isMeshTLS(res detect.Result) bool {
	return res.Protocol == detect.TLS && p.isMeshSNI(res.SNI)
}

// isMeshSNI: an identity's DNS form in this trust domain, or a routing
// name of this cluster (a mesh client through a multicluster gateway,
// which routes on the name and cannot rewrite it). Either way the peer
// must then complete mesh mTLS.
func (p *Proxy) isMeshSNI(sni string) bool {
	if isMeshSNI(sni, p.cfg.Store.LocalIdentity()) {
		return true
	}
	domain := p.cfg.ClusterDomain
	if domain == "" {
		domain = "cluster.local"
	}
	_, err := routingname.Parse(sni, domain)
	return err == nil
}

func isHTTP(p detect.Protocol) bool { return p == detect.HTTP1 || p == detect.HTTP2 }

// isMeshSNI reports whether sni is the DNS form of an identity in local's
// trust domain.
func isMeshSNI(sni string, local identity.ID) bool {
	if sni == "" {
		return false
	}
	id, err := identity.ParseServerName(sni)
	return err == nil && id.TrustDomain == local.TrustDomain
}
