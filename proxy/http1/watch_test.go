package http1

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pipelined writes n requests (alternately a GET and a POST with a small
// body) in one write and checks the n responses, in order.
func pipelined(t testing.TB, c net.Conn, br *bufio.Reader, n int) {
	t.Helper()
	var reqs strings.Builder
	for i := range n {
		if i%2 == 0 {
			reqs.WriteString("GET /books/1 HTTP/1.1\r\nHost: a\r\n\r\n")
		} else {
			reqs.WriteString("POST /books HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
		}
	}
	if _, err := io.WriteString(c, reqs.String()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("response %d: %d %q %v", i, resp.StatusCode, b, err)
		}
	}
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Length", "2")
		_, _ = io.WriteString(w, "ok")
	})
}

// TestServerNoWatchForFastHandlers: a request answered before the watch
// delay starts no background read (no goroutine per request), keep-alive
// and pipelined, with and without a body.
func TestServerNoWatchForFastHandlers(t *testing.T) {
	var watches atomic.Int64
	s := &Server{Handler: okHandler(), watchDelay: time.Hour, watchHook: func() { watches.Add(1) }}
	c, err := net.Dial("tcp", serve(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for range 5 {
		pipelined(t, c, br, 10)
	}
	if n := watches.Load(); n != 0 {
		t.Fatalf("%d background reads for 50 fast requests, want 0", n)
	}
}

// TestServerWatchStartsForSlowHandlers: a handler still running after the
// delay gets the watch, which keeps a pipelined request's first byte.
func TestServerWatchStartsForSlowHandlers(t *testing.T) {
	watching := make(chan struct{}, 10)
	var slow atomic.Bool
	slow.Store(true)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Swap(false) {
			// Wait for the watch to start (and to take the next
			// request's first byte) before answering.
			within(t, 10*time.Second, "the watch read", watching)
		}
		okHandler().ServeHTTP(w, r)
	})
	s := &Server{Handler: h, watchDelay: time.Millisecond, watchHook: func() { watching <- struct{}{} }}
	c, err := net.Dial("tcp", serve(t, s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pipelined(t, c, bufio.NewReader(c), 4)
}

func within(t testing.TB, d time.Duration, what string, ch <-chan struct{}) {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
	case <-time.After(d):
		t.Errorf("no %s after %v", what, time.Since(start))
	}
}

// BenchmarkServerKeepAlive: small requests one at a time on one
// keep-alive connection, the server's cost per request (with the client's
// on the same machine).
func BenchmarkServerKeepAlive(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &Server{Handler: okHandler()}
	go func() {
		c, err := ln.Accept()
		if err == nil {
			s.ServeConn(b.Context(), c)
		}
	}()
	defer s.Close()
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	b.ReportAllocs()
	for b.Loop() {
		pipelined(b, c, br, 1)
	}
}

// countingConn counts Write calls.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestServerOneWritePerSmallResponse: a small response (head and body,
// with a declared length, a held-back length, or chunked with trailers)
// leaves in one socket write.
func TestServerOneWritePerSmallResponse(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/length":
			w.Header().Set("Content-Length", "2")
		case "/trailers":
			w.Header().Set("Trailer", "X-T")
			defer w.Header().Set("X-T", "t")
		}
		_, _ = io.WriteString(w, "ok")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := &Server{Handler: h}
	defer s.Close()
	conns := make(chan *countingConn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(conns)
			return
		}
		cc := &countingConn{Conn: c}
		conns <- cc
		s.ServeConn(context.Background(), cc)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-conns
	br := bufio.NewReader(c)
	for _, path := range []string{"/length", "/held", "/trailers"} {
		before := sc.writes.Load()
		if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if string(b) != "ok" || path == "/trailers" && resp.Trailer.Get("X-T") != "t" {
			t.Fatalf("%s: %q, trailers %v", path, b, resp.Trailer)
		}
		if n := sc.writes.Load() - before; n != 1 {
			t.Errorf("%s: %d socket writes, want 1", path, n)
		}
	}
}
