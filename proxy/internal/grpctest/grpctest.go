// Package grpctest holds what the tests of the proxy's control-plane
// clients share: real gRPC servers and clients on loopback, the server side
// of keyed streams, and reading a metric from a registry.
package grpctest

import (
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve serves the services register adds on addr ("127.0.0.1:0": a new
// port; an address served before: a restarted server) until stop or the
// end of the test, and returns the bound address.
func Serve(t testing.TB, addr string, register func(*grpc.Server)) (string, func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	register(gs)
	go func() { _ = gs.Serve(ln) }()
	var once sync.Once
	stop := func() { once.Do(gs.Stop) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// Dial returns a plain-text connection to addr, closed at the end of the
// test, that reconnects within 200 ms once a stopped server is back.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
