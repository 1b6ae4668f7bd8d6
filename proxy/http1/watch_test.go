package http1

import (
	"bufio"
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
