package meshh2

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// leanPair is a lean client on a lean server with opts, over TLS on
// loopback; wrap, when set, wraps each side's TCP conn below TLS.
func leanPair(t *testing.T, h http.Handler, opts ServerOptions, wrap func(server bool, c net.Conn) net.Conn) *ClientConn {
	t.Helper()
	if wrap == nil {
		wrap = func(_ bool, c net.Conn) net.Conn { return c }
	}
	tt := newTestTLS(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tc := tls.Server(wrap(true, c), tt.server)
		if tc.Handshake() != nil {
			return
		}
		opts.Handler = h
		_ = NewServerConn(tc, opts).Serve()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(wrap(false, raw), tt.client)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(tc, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Close()
		within(t, 10*time.Second, "server exit", served)
	})
	return cc
}

// TestServerIdleTimeout: a connection without streams for IdleTimeout is
// closed with GOAWAY (the client stops using it); one whose handler runs
// longer than that is not.
func TestServerIdleTimeout(t *testing.T) {
	const idle = 250 * time.Millisecond
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(4 * idle) // no stream ends meanwhile: not idle
		}
		_, _ = io.WriteString(w, "ok")
	})
	cc := leanPair(t, h, ServerOptions{IdleTimeout: idle}, nil)
	for _, path := range []string{"/", "/slow"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "https://x"+path, nil)
		res, err := cc.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("%s: %q %v", path, b, err)
		}
	}
	start := time.Now()
	for cc.CanTakeNewRequest() {
		if time.Since(start) > 10*time.Second {
			t.Fatal("connection still open 10s after it went idle")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("closed %v after the last stream (idle timeout %v)", time.Since(start).Round(time.Millisecond), idle)
}

// TestServerIdleGoAwayRefusesLateStreams: a request that crosses the idle
// GOAWAY on the wire is refused with REFUSED_STREAM (the client may retry
// it elsewhere), not lost to a connection closed under it.
func TestServerIdleGoAwayRefusesLateStreams(t *testing.T) {
	rc := newRawClient(t, http.NotFoundHandler(), ServerOptions{IdleTimeout: 100 * time.Millisecond})
	rc.until(t, "the idle GOAWAY", func(f http2.Frame) bool {
		ga, ok := f.(*http2.GoAwayFrame)
		return ok && ga.ErrCode == http2.ErrCodeNo
	})
	rc.headers(t, 1, true, ":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/")
	rc.until(t, "REFUSED_STREAM on stream 1", func(f http2.Frame) bool {
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.StreamID == 1 && rst.ErrCode == http2.ErrCodeRefusedStream
	})
}
