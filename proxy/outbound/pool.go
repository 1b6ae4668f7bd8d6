package outbound

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/h2pool"
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

// newPool holds one multiplexed HTTP/2 connection per (peer address,
// identity, SNI): mesh TLS to a peer proxy, or plain h2c.
func newPool(d *dialer) *h2pool.Pool[poolKey] {
	return h2pool.New(h2pool.Config[poolKey]{
		Dial: func(ctx context.Context, k poolKey) (net.Conn, error) {
			if k.id.IsZero() {
				return d.plain(ctx, k.addr)
			}
			tc, err := d.mesh(ctx, k.addr, k.id, k.sni, transport.ALPNHTTP)
			if err != nil {
				return nil, err
			}
			return tc, nil
		},
		DialTimeout: d.timeout,
		// A peer proxy is pinged when silent; a server outside the mesh
		// is not (gRPC servers close a connection pinged too often).
		Options: func(k poolKey) meshh2.ClientOptions {
			if k.id.IsZero() {
				return h2pool.AppOptions
			}
			return h2pool.PeerOptions
		},
		Fail: func(k poolKey, err error) error { return &connectError{addr: k.addr, err: err} },
	})
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
