package outbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
	"github.com/trellis-mesh/trellis/proxy/meshtls"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/rawio"
	"github.com/trellis-mesh/trellis/proxy/transport"
)

// errConnect marks failures to establish a connection to an endpoint: the
// request provably never left the proxy, so it may be retried elsewhere.
var errConnect = proxyerr.ErrConnect

type connectError struct {
	addr string
	err  error
}

func (e *connectError) Error() string { return "connecting to " + e.addr + ": " + e.err.Error() }
func (e *connectError) Unwrap() []error {
	return []error{errConnect, e.err}
}

type poolKey struct {
	addr string
	id   identity.ID // zero: plain h2c
	sni  string      // a gateway's routing name; "": the identity's
}

// meshConn is a multiplexed HTTP/2 client connection (*meshh2.ClientConn),
// to a peer proxy over mesh TLS or to a plain h2c endpoint.
type meshConn interface {
	ReserveNewRequest() bool
	RoundTrip(*http.Request) (*http.Response, error)
	Shutdown(context.Context) error
	Close() error
}

// The pool's connection timeouts, as x/net's Transport had them: a peer
// silent for readIdleTimeout is pinged and dropped pingTimeout later, and
// a conn without streams for idleConnTimeout is closed, so conns replaced
// in the pool (full or going away) do not linger.
const (
	readIdleTimeout = 30 * time.Second
	pingTimeout     = 10 * time.Second
	idleConnTimeout = 5 * time.Minute
)

type dialCall struct {
	done chan struct{}
	err  error
}

// pool holds one multiplexed HTTP/2 connection per (peer address, identity),
// dialed once (singleflight) and redialed when it can take no new request.
type pool struct {
	dialer  *dialer
	mu      sync.Mutex
	conns   map[poolKey]meshConn
	dialing map[poolKey]*dialCall
	closed  bool
}

func newPool(d *dialer) *pool {
	return &pool{
		dialer:  d,
		conns:   make(map[poolKey]meshConn),
		dialing: make(map[poolKey]*dialCall),
	}
}

// get returns a connection with a reserved stream slot.
func (p *pool) get(ctx context.Context, k poolKey) (meshConn, error) {
	for attempt := 0; attempt < 4; attempt++ {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, &connectError{addr: k.addr, err: net.ErrClosed}
		}
		if cc := p.conns[k]; cc != nil {
			if cc.ReserveNewRequest() {
				p.mu.Unlock()
				return cc, nil
			}
			// Unusable, going away, or out of streams: replace it. A full
			// conn keeps serving its streams and closes when idle.
			delete(p.conns, k)
		}
		call := p.dialing[k]
		if call == nil {
			call = &dialCall{done: make(chan struct{})}
			p.dialing[k] = call
			p.mu.Unlock()
			cc, err := p.dial(k)
			p.mu.Lock()
			delete(p.dialing, k)
			if err == nil {
				if p.closed {
					_ = cc.Close()
					err = net.ErrClosed
				} else {
					p.conns[k] = cc
				}
			}
			call.err = err
			close(call.done)
			p.mu.Unlock()
		} else {
			p.mu.Unlock()
		}
		select {
		case <-call.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if call.err != nil {
			return nil, call.err
		}
	}
	return nil, &connectError{addr: k.addr, err: errors.New("no usable connection")}
}

func (p *pool) dial(k poolKey) (meshConn, error) {
	// Not bound to one request's context: the connection is shared.
	ctx, cancel := context.WithTimeout(context.Background(), p.dialer.timeout)
	defer cancel()
	var c net.Conn
	var err error
	if k.id.IsZero() {
		c, err = p.dialer.plain(ctx, k.addr)
	} else {
		c, err = p.dialer.mesh(ctx, k.addr, k.id, k.sni, transport.ALPNHTTP)
	}
	if err != nil {
		return nil, err
	}
	// The same client for both: meshh2 speaks prior-knowledge h2c on a
	// plain conn as it speaks h2 over mesh TLS. It sends no Accept-Encoding
	// of its own, and so never decompresses the app's response.
	cc, err := meshh2.NewClientConn(c, meshh2.ClientOptions{
		ReadIdleTimeout: readIdleTimeout,
		PingTimeout:     pingTimeout,
		IdleTimeout:     idleConnTimeout,
	})
	if err != nil {
		_ = c.Close()
		return nil, &connectError{addr: k.addr, err: err}
	}
	return cc, nil
}

// shutdown closes idle connections now and the rest when their streams end
// (a GOAWAY-like graceful close on the client side).
func (p *pool) shutdown(ctx context.Context) {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[poolKey]meshConn{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, cc := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cc.Shutdown(ctx); err != nil {
				_ = cc.Close()
			}
		}()
	}
	wg.Wait()
}

// dialer opens connections to endpoints: plain TCP, or mesh TLS with the
// expected identity and ALPN.
type dialer struct {
	store   *meshtls.Store
	metrics *metrics.Metrics
	net     net.Dialer
	timeout time.Duration
}

func (d *dialer) plain(ctx context.Context, addr string) (net.Conn, error) {
	c, err := d.net.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &connectError{addr: addr, err: err}
	}
	return rawio.Wrap(c), nil
}

// mesh opens mesh TLS to addr, which must prove id; sni, when set, is sent
// instead of id's DNS form (a gateway routes on it).
func (d *dialer) mesh(ctx context.Context, addr string, id identity.ID, sni, alpn string) (*tls.Conn, error) {
	c, err := d.net.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &connectError{addr: addr, err: err}
	}
	c = rawio.Wrap(c)
	cfg := d.store.ClientConfig(id, []string{alpn})
	if sni != "" {
		cfg.ServerName = sni
	}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		d.metrics.HandshakeError(metrics.Outbound, meshtls.HandshakeErrorReason(err))
		return nil, &connectError{addr: addr, err: fmt.Errorf("mesh TLS handshake with %s: %w", id, err)}
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != alpn {
		_ = tc.Close()
		d.metrics.HandshakeError(metrics.Outbound, meshtls.ReasonProtocol)
		return nil, &connectError{addr: addr, err: fmt.Errorf("peer %s negotiated ALPN %q, want %q", id, got, alpn)}
	}
	d.metrics.Handshake(metrics.Outbound, tc.ConnectionState().CurveID)
	return tc, nil
}

// opaque opens an opaque stream to an endpoint: for a meshed endpoint a TLS
// connection with ALPN trellis-opaque/1 and the transport header written;
// otherwise plain TCP.
func (d *dialer) opaque(ctx context.Context, addr string, id identity.ID, sni string, port uint16, authority string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if id.IsZero() {
		return d.plain(ctx, addr)
	}
	tc, err := d.mesh(ctx, addr, id, sni, transport.ALPNOpaque)
	if err != nil {
		return nil, err
	}
	if len(authority) > transport.MaxAuthority {
		authority = ""
	}
	hdr, err := transport.Header{Port: port, Authority: authority}.Append(nil)
	if err != nil {
		_ = tc.Close()
		return nil, fmt.Errorf("encoding transport header: %w", err)
	}
	if _, err := tc.Write(hdr); err != nil {
		_ = tc.Close()
		return nil, &connectError{addr: addr, err: err}
	}
	return tc, nil
}
