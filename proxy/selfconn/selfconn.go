// Package selfconn records the local addresses of the connections the
// proxy itself opens towards its app, so that a listener of the same proxy
// (the admin server) can tell a caller that came through the proxy from a
// process of the pod: both arrive from 127.0.0.1 in local mode, and only the
// source port tells them apart.
package selfconn

import (
	"context"
	"net"
	"net/netip"
	"sync"

	"github.com/trellis-mesh/trellis/proxy/rawio"
)

// Set is the set of local addresses of live connections dialled through it.
// The zero value is ready; a nil *Set dials without recording.
type Set struct {
	mu sync.Mutex
	m  map[netip.AddrPort]int
}

// Dial dials addr with d and records the connection's local address until
// the returned connection is closed.
func (s *Set) Dial(ctx context.Context, d *net.Dialer, network, addr string) (net.Conn, error) {
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return rawio.Wrap(c), nil
	}
	ap, ok := addrPort(c.LocalAddr())
	if !ok {
		return c, nil
	}
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[netip.AddrPort]int)
	}
	s.m[ap]++
	s.mu.Unlock()
	release := sync.OnceFunc(func() { s.remove(ap) })
	if tc, ok := c.(*net.TCPConn); ok {
		if rc := rawio.New(tc); rc != nil {
			// Embedding (through rawio.Conn) *net.TCPConn keeps CloseWrite
			// and SyscallConn visible to the code that type-asserts for
			// them.
			return &tcpConn{Conn: rc, release: release}, nil
		}
	}
	return &conn{Conn: c, release: release}, nil
}

// Contains reports whether ap is the local address of a live connection
// dialled through s.
func (s *Set) Contains(ap netip.AddrPort) bool {
	if s == nil {
		return false
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[ap] > 0
}

// Len is the number of live connections recorded.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, v := range s.m {
		n += v
	}
	return n
}

func (s *Set) remove(ap netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[ap] <= 1 {
		delete(s.m, ap)
		return
	}
	s.m[ap]--
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), ap.IsValid()
}

type tcpConn struct {
	*rawio.Conn
	release func()
}

func (c *tcpConn) Close() error {
	c.release()
	return c.Conn.Close()
}

type conn struct {
	net.Conn
	release func()
}

func (c *conn) Close() error {
	c.release()
	return c.Conn.Close()
}
