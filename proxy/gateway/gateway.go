package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/internal/routingname"
	"github.com/trellis-mesh/trellis/proxy/forward"
)

// Endpoints returns the addresses (ip:port) of the meshed endpoints of an
// exported service, by authority; none (or an error) refuses the
// connection. It is the gateway's whole policy: a service that is not
// exported, or an endpoint that is not meshed (which would end mTLS at a
// plain-text app), must never be returned.
type Endpoints func(ctx context.Context, authority string) ([]string, error)

// Gateway passes mesh TLS connections to the service their server name
// routes to.
type Gateway struct {
	ClusterDomain string
	Endpoints     Endpoints
	// Dial connects to an endpoint; default net.Dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// HelloTimeout bounds the wait for a ClientHello (default 10 s),
	// DialTimeout a connection to an endpoint (default 5 s).
	HelloTimeout, DialTimeout time.Duration
	// MaxConns bounds the connections held at once (default 10,000): one
	// more is closed at once and counted (overloaded), so that a caller
	// opening connections it never uses cannot exhaust the gateway.
	MaxConns int
	Log      *slog.Logger
	Metrics  *Metrics // nil: not counted
}

// Results of trellis_gateway_connections_total.
const (
	ResultRouted       = "routed"
	ResultNotTLS       = "not_tls"
	ResultNoServerName = "no_server_name"
	ResultBadName      = "bad_name"
	ResultNoEndpoints  = "no_endpoints"
	ResultConnectError = "connect_error"
	ResultTimeout      = "timeout"
	ResultOverloaded   = "overloaded"
)

// DefaultMaxConns is MaxConns' default.
const DefaultMaxConns = 10000

// Metrics of a Gateway.
type Metrics struct {
	conns *prometheus.CounterVec
	bytes *prometheus.CounterVec
}

// NewMetrics registers the gateway's metrics on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_gateway_connections_total",
			Help: "Connections the multicluster gateway accepted, by result (routed, or why it closed them).",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_gateway_bytes_total",
			Help: "Bytes the gateway passed, by direction (to_endpoint, to_client).",
		}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.conns, m.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Metrics) result(r string) {
	if m != nil {
		m.conns.WithLabelValues(r).Inc()
	}
}

// Serve accepts connections on ln until ctx ends or ln fails, and waits
// for the connections it passed to end.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	// A caller can send refusals as fast as it connects: one line per
	// reason a minute, with the count of those held back.
	lim := ratelog.New(g.log(), 0)
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	slots := make(chan struct{}, g.maxConns())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		select {
		case slots <- struct{}{}:
		default:
			_ = c.Close()
			g.refuse(ctx, lim, ResultOverloaded, c.RemoteAddr().String(), "", fmt.Errorf("%d connections held", cap(slots)))
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			g.handle(ctx, c, lim)
		}()
	}
}

func (g *Gateway) maxConns() int {
	if g.MaxConns > 0 {
		return g.MaxConns
	}
	return DefaultMaxConns
}

func (g *Gateway) log() *slog.Logger {
	if g.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return g.Log
}

// handle routes one connection, or closes it saying why (to the log and
// the metrics; never to the client, who gets no byte from the gateway).
func (g *Gateway) handle(ctx context.Context, c net.Conn, lim *ratelog.Limiter) {
	defer c.Close()
	peer := c.RemoteAddr().String()
	name, hello, err := ReadServerName(ctx, c, durationOr(g.HelloTimeout, 10*time.Second))
	if err != nil {
		g.refuse(ctx, lim, helloResult(err), peer, "", err)
		return
	}
	t, err := routingname.Parse(name, g.ClusterDomain)
	if err != nil {
		g.refuse(ctx, lim, ResultBadName, peer, name, err)
		return
	}
	authority := t.Authority(g.ClusterDomain)
	addrs, err := g.Endpoints(ctx, authority)
	if err == nil && len(addrs) == 0 {
		err = errors.New("no meshed endpoint of an exported service")
	}
	if err != nil {
		g.refuse(ctx, lim, ResultNoEndpoints, peer, name, err)
		return
	}
	up, err := g.dial(ctx, addrs)
	if err != nil {
		g.refuse(ctx, lim, ResultConnectError, peer, name, err)
		return
	}
	if _, err := up.Write(hello); err != nil {
		_ = up.Close()
		g.refuse(ctx, lim, ResultConnectError, peer, name, err)
		return
	}
	g.Metrics.result(ResultRouted)
	toEndpoint, toClient, err := forward.Splice(c, up)
	if g.Metrics != nil {
		g.Metrics.bytes.WithLabelValues("to_endpoint").Add(float64(toEndpoint + int64(len(hello))))
		g.Metrics.bytes.WithLabelValues("to_client").Add(float64(toClient))
	}
	if err != nil {
		g.log().Debug("gateway: connection ended with an error", "peer", peer, "service", authority, "err", err)
	}
}

// dial tries the endpoints from a random one, each once.
func (g *Gateway) dial(ctx context.Context, addrs []string) (net.Conn, error) {
	dial := g.Dial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	var errs []error
	start := rand.IntN(len(addrs))
	for i := range addrs {
		addr := addrs[(start+i)%len(addrs)]
		dctx, cancel := context.WithTimeout(ctx, durationOr(g.DialTimeout, 5*time.Second))
		up, err := dial(dctx, addr)
		cancel()
		if err == nil {
			return up, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
	}
	return nil, errors.Join(errs...)
}

func (g *Gateway) refuse(ctx context.Context, lim *ratelog.Limiter, result, peer, name string, err error) {
	g.Metrics.result(result)
	lim.Log(ctx, slog.LevelInfo, result, "gateway: connection refused", "peer", peer, "server_name", name, "reason", result, "err", err)
}

func helloResult(err error) string {
	switch {
	case errors.Is(err, ErrNoServerName):
		return ResultNoServerName
	case errors.Is(err, ErrNotTLS):
		return ResultNotTLS
	}
	return ResultTimeout
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
