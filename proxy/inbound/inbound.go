// Package inbound is the mesh-facing listener: it terminates mesh TLS
// (recording the client's identity), dispatches on ALPN (multiplexed HTTP/2
// or opaque transport streams), restores HTTP/1 towards the app, and passes
// plain-text callers and the app's own TLS through.
package inbound

//lint:file-ignore SA1019 x/net/http2 ServeConn/NewClientConn give per-connection control (mesh TLS, sniffed conns, one pooled conn per peer) that net/http does not expose yet.

import (
	"context"
	"crypto/tls"
	"errors"
	"github.com/trellis-mesh/trellis/internal/identity"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/http1"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/origdst"
	"github.com/trellis-mesh/trellis/proxy/transport"
)

// Config configures the inbound proxy.
type Config struct {
	Store   *meshtls.Store
	Metrics *metrics.Metrics
	Logger  *slog.Logger
	// AppAddr is where traffic goes when no target port is known.
	AppAddr string
	// Transparent: the default target is 127.0.0.1:<original destination
	// port> (SO_ORIGINAL_DST) instead of AppAddr.
	Transparent      bool
	DetectTimeout    time.Duration
	HandshakeTimeout time.Duration // default 10s
	DialTimeout      time.Duration // default 5s
	OpaquePorts      map[uint16]bool
	OrigDst          func(net.Conn) (netip.AddrPort, error)
	// MeshTransport serves mesh HTTP/2 with x/net ("xnet", default) or
	// the lean proxy/meshh2 server ("lean").
	MeshTransport string

	// HeaderTimeout bounds reading an HTTP/1 request head (default 30s).
	HeaderTimeout time.Duration
}

// Mesh transports (Config.MeshTransport).
const (
	MeshTransportXNet = "xnet"
	MeshTransportLean = "lean"
)

// Proxy is the inbound proxy.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics.Metrics
	tlsConf *tls.Config
	dialer  net.Dialer
	h1      *forward.H1Client // HTTP/1.1 towards the app
	h2c     *http2.Transport  // prior-knowledge HTTP/2 towards the app
	h1srv   *http1.Server     // plain-text HTTP/1 callers
	h2srv   *http2.Server
	h2base  *http.Server
	tracker forward.Tracker
	ports   sync.Map // uint16 -> "127.0.0.1:port"

	mu      sync.Mutex
	lns     []net.Listener
	closing bool
	lean    map[*meshh2.ServerConn]struct{} // live lean mesh conns, for drain
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
	switch cfg.MeshTransport {
	case "":
		cfg.MeshTransport = MeshTransportXNet
	case MeshTransportXNet, MeshTransportLean:
	default:
		return nil, errors.New("inbound: mesh transport must be xnet or lean, got " + strconv.Quote(cfg.MeshTransport))
	}
	p := &Proxy{
		cfg: cfg, log: cfg.Logger, m: cfg.Metrics,
		lean:    make(map[*meshh2.ServerConn]struct{}),
		tlsConf: cfg.Store.ServerConfig([]string{transport.ALPNHTTP, transport.ALPNOpaque}),
		dialer:  net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		h2srv: &http2.Server{
			// One connection per peer proxy carries all of its requests.
			MaxConcurrentStreams: 2000,
			IdleTimeout:          10 * time.Minute,
		},
	}
	p.h1 = &forward.H1Client{
		Dialer:                p.dialer,
		MaxIdlePerAddr:        256,
		IdleTimeout:           90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	p.h2c = &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return p.dialer.DialContext(ctx, network, addr)
		},
		IdleConnTimeout: 5 * time.Minute,
	}
	p.h1srv = &http1.Server{
		Handler:           http.HandlerFunc(p.serveHTTP),
		ReadHeaderTimeout: cfg.HeaderTimeout,
		IdleTimeout:       5 * time.Minute,
		Logger:            cfg.Logger,
		OnError: func(_ int, reason string) {
			p.m.ProtocolError(metrics.Inbound, metrics.SideClient, reason)
		},
	}
	p.h2base = &http.Server{Handler: http.HandlerFunc(p.serveHTTP)}
	if err := http2.ConfigureServer(p.h2base, p.h2srv); err != nil {
		return nil, err
	}
	return p, nil
}

type connInfoKey struct{}

// connInfo is what a request needs to know about its connection.
type connInfo struct {
	peer   string // client identity proven by mesh TLS, "" otherwise
	tls    bool
	target string // default app address
	raw    net.Conn
}

// Serve accepts connections on ln until it is closed.
func (p *Proxy) Serve(ln net.Listener) error {
	p.mu.Lock()
	p.lns = append(p.lns, ln)
	p.mu.Unlock()
	return p.tracker.Serve(ln, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.closing
	}, p.handle)
}

// Shutdown drains: listeners stop accepting, HTTP/2 peers get GOAWAY, idle
// HTTP/1 connections close, and in-flight work gets until ctx ends.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closing = true
	for _, ln := range p.lns {
		_ = ln.Close()
	}
	leanConns := make([]*meshh2.ServerConn, 0, len(p.lean))
	for sc := range p.lean {
		leanConns = append(leanConns, sc)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, sc := range leanConns {
		wg.Add(1)
		go func() { defer wg.Done(); _ = sc.Shutdown(ctx) }()
	}
	p.h1srv.Shutdown()
	wg.Add(1)
	go func() { defer wg.Done(); _ = p.h2base.Shutdown(ctx) }()
	err := p.tracker.Wait(ctx)
	wg.Wait()
	p.h1srv.Close()
	p.h1.CloseIdleConnections(true)
	p.h2c.CloseIdleConnections()
	return err
}

func (p *Proxy) portAddr(port uint16) string {
	if v, ok := p.ports.Load(port); ok {
		return v.(string)
	}
	s := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port)))
	p.ports.Store(port, s)
	return s
}

func (p *Proxy) handle(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	info := &connInfo{target: p.cfg.AppAddr, raw: c}
	if p.cfg.Transparent {
		orig, err := p.cfg.OrigDst(c)
		if err != nil {
			p.log.Warn("inbound: no original destination", "remote", c.RemoteAddr().String(), "err", err)
			_ = c.Close()
			return
		}
		info.target = p.portAddr(orig.Port())
		if p.cfg.OpaquePorts[orig.Port()] {
			p.m.Detect(metrics.Inbound, "opaque", "skipped")
			p.opaqueToApp(c, info, info.target, info.target)
			return
		}
	}
	res, err := detect.Detect(c, p.cfg.DetectTimeout)
	if err != nil {
		p.m.Detect(metrics.Inbound, "opaque", "error")
		_ = c.Close()
		return
	}
	result := "ok"
	if res.TimedOut {
		result = "timeout"
	}
	p.m.Detect(metrics.Inbound, res.Protocol.String(), result)
	conn := forward.WithCloseWrite(res.Conn, c)
	switch res.Protocol {
	case detect.TLS:
		// Any SNI in the mesh's identity form is a mesh peer: terminate it
		// with our own certificate even when it asks for another identity,
		// so that the caller refuses us with a clear wrong-identity error
		// instead of our app answering a handshake it cannot understand.
		if isMeshSNI(res.SNI, p.cfg.Store.LocalIdentity()) {
			p.serveMesh(conn, info)
			return
		}
		// The app's own TLS: not ours to terminate.
		p.opaqueToApp(conn, info, info.target, info.target)
	case detect.HTTP1:
		p.h1srv.ServeConn(context.WithValue(context.Background(), connInfoKey{}, info), conn)
	case detect.HTTP2:
		p.serveH2(conn, info)
	default:
		p.opaqueToApp(conn, info, info.target, info.target)
	}
}

func (p *Proxy) serveH2(c net.Conn, info *connInfo) {
	p.h2srv.ServeConn(c, &http2.ServeConnOpts{
		// Not cancelled by Shutdown: in-flight requests finish during a drain.
		Context:    context.WithValue(context.Background(), connInfoKey{}, info),
		BaseConfig: p.h2base,
		Handler:    http.HandlerFunc(p.serveHTTP),
	})
}

// serveLean serves a mesh HTTP/2 connection with proxy/meshh2: handlers
// write frames directly, without x/net's serve-loop handoffs.
func (p *Proxy) serveLean(c net.Conn, info *connInfo) {
	sc := meshh2.NewServerConn(c, meshh2.ServerOptions{
		Handler: http.HandlerFunc(p.serveHTTP),
		// Not cancelled by Shutdown: in-flight requests finish during a drain.
		BaseContext:          context.WithValue(context.Background(), connInfoKey{}, info),
		MaxConcurrentStreams: p.h2srv.MaxConcurrentStreams,
		Logger:               p.log,
	})
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.lean[sc] = struct{}{}
	p.mu.Unlock()
	if err := sc.Serve(); err != nil {
		p.log.Debug("inbound: mesh connection ended", "peer", info.peer, "err", err)
	}
	p.mu.Lock()
	delete(p.lean, sc)
	p.mu.Unlock()
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
	mi := &connInfo{peer: id.String(), tls: true, target: info.target, raw: info.raw}
	switch cs.NegotiatedProtocol {
	case transport.ALPNHTTP:
		if p.cfg.MeshTransport == MeshTransportLean {
			p.serveLean(tc, mi)
			return
		}
		p.serveH2(tc, mi)
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
		if h.Port != 0 && !p.isOwnPort(h.Port) {
			target = p.portAddr(h.Port)
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

// isOwnPort reports whether port is one of our listeners' ports, which
// would loop back into the proxy: such streams go to the default target.
func (p *Proxy) isOwnPort(port uint16) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ln := range p.lns {
		if a, ok := ln.Addr().(*net.TCPAddr); ok && a.Port == int(port) {
			return true
		}
	}
	return false
}

// opaqueToApp splices a stream to the app and records TCP metrics.
func (p *Proxy) opaqueToApp(c net.Conn, info *connInfo, target, dst string) {
	defer c.Close()
	tm := p.m.TCP(metrics.Key{Direction: metrics.Inbound, DstService: dst, PeerIdentity: info.peer, TLS: info.tls})
	tm.Open()
	app, err := p.dialer.Dial("tcp", target)
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

// isMeshSNI reports whether sni is the DNS form of an identity in local's
// trust domain.
func isMeshSNI(sni string, local identity.ID) bool {
	if sni == "" {
		return false
	}
	id, err := identity.ParseServerName(sni)
	return err == nil && id.TrustDomain == local.TrustDomain
}
