// Package gateway is the data path of the multicluster gateway
// (docs/multicluster.md, gateway mode): it learns which service a mesh
// client wants from the server name of its TLS ClientHello, without
// terminating TLS, and passes the connection, every byte unchanged, to a
// meshed endpoint of that service. The client's mTLS session therefore
// reaches the server's own proxy, which sees the client's identity; the
// gateway never holds a key of the session and trusts no header.
package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// MaxHello bounds the bytes read before the ClientHello is complete: a
// mesh client's hello is a few hundred bytes; more is not a mesh client.
const MaxHello = 16 << 10

// ErrNotTLS: the first bytes were not a TLS ClientHello (or it was
// malformed, or longer than MaxHello).
var ErrNotTLS = errors.New("not a TLS ClientHello")

// ErrNoServerName: a ClientHello without a server name; a mesh client
// always sends one.
var ErrNoServerName = errors.New("ClientHello without a server name")

// errHelloRead ends the handshake once the hello is read.
var errHelloRead = errors.New("hello read")

// ReadServerName reads conn's ClientHello, parsed by crypto/tls (no TLS
// parser of our own), and returns its server name and every byte read,
// which the caller replays to the endpoint before splicing. Nothing is
// written to conn: the handshake is only observed. The read is bounded by
// MaxHello and by timeout.
func ReadServerName(ctx context.Context, conn net.Conn, timeout time.Duration) (name string, read []byte, err error) {
	rec := &recorder{Conn: conn}
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", nil, err
	}
	defer func() { _ = conn.SetReadDeadline(time.Time{}) }()
	var got bool
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name, got = h.ServerName, true
			return nil, errHelloRead
		},
	}
	herr := tls.Server(rec, cfg).HandshakeContext(ctx)
	switch {
	case got && name == "":
		return "", nil, ErrNoServerName
	case got:
		return name, rec.buf.Bytes(), nil
	case rec.over:
		return "", nil, fmt.Errorf("%w: more than %d bytes", ErrNotTLS, MaxHello)
	case errors.Is(herr, context.Canceled), errors.Is(herr, context.DeadlineExceeded), isTimeout(herr):
		return "", nil, fmt.Errorf("reading the ClientHello: %w", herr)
	default:
		return "", nil, fmt.Errorf("%w: %v", ErrNotTLS, herr)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// recorder keeps what crypto/tls reads and swallows what it would write
// (its alert when the handshake is ended): the client sees nothing from
// the gateway itself.
type recorder struct {
	net.Conn
	buf  bytes.Buffer
	over bool
}

func (r *recorder) Read(p []byte) (int, error) {
	if r.buf.Len() >= MaxHello {
		r.over = true
		return 0, ErrNotTLS
	}
	p = p[:min(len(p), MaxHello-r.buf.Len())]
	n, err := r.Conn.Read(p)
	r.buf.Write(p[:n])
	return n, err
}

func (r *recorder) Write(p []byte) (int, error) { return len(p), nil }
