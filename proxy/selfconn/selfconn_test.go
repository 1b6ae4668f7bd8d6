package selfconn

import (
	"context"
	"net"
	"net/netip"
	"testing"
)

func TestSetTracksLiveConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	var s Set
	c, err := s.Dial(context.Background(), &net.Dialer{}, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	defer srv.Close()
	// The server sees the dialled connection's local address as remote.
	remote := netip.MustParseAddrPort(srv.RemoteAddr().String())
	if !s.Contains(remote) {
		t.Fatalf("%v not recorded", remote)
	}
	if _, ok := c.(interface{ CloseWrite() error }); !ok {
		t.Error("the recorded connection lost CloseWrite")
	}
	other := netip.AddrPortFrom(remote.Addr(), remote.Port()+1)
	if s.Contains(other) {
		t.Fatalf("%v reported but never dialled", other)
	}
	_ = c.Close()
	_ = c.Close() // a second Close must not underflow
	if s.Contains(remote) || s.Len() != 0 {
		t.Fatalf("closed connection still recorded (len %d)", s.Len())
	}
}

func TestNilSetDials(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var s *Set
	c, err := s.Dial(context.Background(), &net.Dialer{}, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Close()
	if s.Contains(netip.MustParseAddrPort(c.LocalAddr().String())) {
		t.Fatal("nil set reports a connection")
	}
}
