package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// h1App serves handler on loopback and counts the connections it accepted.
func h1App(t *testing.T, handler http.HandlerFunc) (addr string, conns *atomic.Int32, srv *http.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	srv = &http.Server{Handler: handler, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), conns, srv
}

func newReq(t *testing.T, ctx context.Context, method, target string, body io.Reader) *http.Request {
	t.Helper()
	r, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestH1ClientExchanges(t *testing.T) {
	addr, conns, _ := h1App(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Sum")
		w.Header().Set("X-Host", r.Host)
		w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Req-Trailer", r.Trailer.Get("X-Req"))
		w.Header().Set("X-Expect", r.Header.Get("Expect"))
		_, _ = w.Write(append([]byte(r.Method+" "+r.URL.RequestURI()+" "), b...))
		w.Header().Set("X-Sum", "ok")
	})
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	ctx := context.Background()
	chunked := func() *http.Request {
		pr, pw := io.Pipe()
		go func() { _, _ = io.WriteString(pw, "streamed"); _ = pw.Close() }()
		r := newReq(t, ctx, "PUT", "http://ignored/up", pr)
		r.ContentLength = -1
		r.Trailer = http.Header{"X-Req": {"t1"}}
		return r
	}
	expect := func() *http.Request {
		r := newReq(t, ctx, "POST", "http://ignored/e", strings.NewReader("hi"))
		r.Header.Set("Expect", "100-continue")
		return r
	}
	for _, tc := range []struct {
		name  string
		req   func() *http.Request
		body  string
		check func(*http.Response) string
	}{
		{"get with host and query", func() *http.Request {
			r := newReq(t, ctx, "GET", "http://ignored/a?b=c", nil)
			r.Host = "books.demo:80"
			return r
		}, "GET /a?b=c ", func(r *http.Response) string { return r.Header.Get("X-Host") + "|" + r.Trailer.Get("X-Sum") }},
		{"post fixed", func() *http.Request {
			return newReq(t, ctx, "POST", "http://ignored/p", strings.NewReader("hello"))
		}, "POST /p hello", func(r *http.Response) string { return r.Header.Get("X-Host") + "|" + r.Trailer.Get("X-Sum") }},
		{"chunked with trailers", chunked, "PUT /up streamed", func(r *http.Response) string {
			return r.Header.Get("X-TE") + "|" + r.Header.Get("X-Req-Trailer")
		}},
		{"expect continue", expect, "POST /e hi", func(r *http.Response) string { return r.Header.Get("X-Expect") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.RoundTrip(tc.req(), addr)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil || string(b) != tc.body {
				t.Fatalf("body %q, %v; want %q", b, err, tc.body)
			}
			t.Logf("check: %s", tc.check(resp))
			switch tc.name {
			case "get with host and query":
				if got := tc.check(resp); got != "books.demo:80|ok" {
					t.Errorf("host|trailer = %q", got)
				}
			case "post fixed":
				if got := tc.check(resp); got != "ignored|ok" {
					t.Errorf("host|trailer = %q", got)
				}
			case "chunked with trailers":
				if got := tc.check(resp); got != "chunked|t1" {
					t.Errorf("te|trailer = %q", got)
				}
			case "expect continue":
				if got := tc.check(resp); got != "100-continue" {
					t.Errorf("expect = %q", got)
				}
			}
		})
	}
	// Every exchange above ended cleanly: one connection carried them all.
	if n := conns.Load(); n != 1 {
		t.Errorf("app saw %d connections, want 1 (reuse)", n)
	}
}

func TestH1ClientUnreadBodyClosesConn(t *testing.T) {
	addr, conns, _ := h1App(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Repeat("x", 100<<10)))
	})
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	for i := 0; i < 2; i++ {
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", "http://x/", nil), addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // unread: the connection cannot be reused
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("app saw %d connections, want 2", n)
	}
}

func TestH1ClientCancelClosesAppConn(t *testing.T) {
	gone := make(chan struct{})
	addr, _, _ := h1App(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			close(gone)
		case <-time.After(10 * time.Second):
		}
	})
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := c.RoundTrip(newReq(t, ctx, "GET", "http://x/hang", nil), addr)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("app never saw the cancellation")
	}
}

// A keep-alive connection the app closed while idle is replaced for a
// replayable request instead of failing it.
func TestH1ClientStaleIdleConnRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
			go func() {
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	get := func() {
		t.Helper()
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", "http://x/", nil), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "ok" {
			t.Fatalf("body %q", b)
		}
		_ = resp.Body.Close()
	}
	get()
	first := <-accepted
	_ = first.Close() // the app times the idle connection out
	time.Sleep(20 * time.Millisecond)
	get()
	select {
	case <-accepted:
	default:
		t.Fatal("no new connection after the stale one")
	}
}

func TestH1ClientRejectsHeaderInjection(t *testing.T) {
	addr, _, _ := h1App(t, func(w http.ResponseWriter, r *http.Request) {})
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	r := newReq(t, context.Background(), "GET", "http://x/", nil)
	r.Header["X-Evil"] = []string{"a\r\nX-Injected: 1"}
	if _, err := c.RoundTrip(r, addr); err == nil {
		t.Fatal("CRLF in a header value was sent")
	}
	r = newReq(t, context.Background(), "GET", "http://x/", nil)
	r.Host = "a\nb"
	if _, err := c.RoundTrip(r, addr); err == nil {
		t.Fatal("LF in Host was sent")
	}
}

// An app that starts shutting down closes its idle keep-alive connections;
// a request with a body (not replayable) that follows at once must not be
// written on one of them.
func TestH1ClientClosedIdleConnNotUsedForBody(t *testing.T) {
	var closed atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed.Add(1)
			}
		},
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	post := func(body string) error {
		resp, err := c.RoundTrip(newReq(t, context.Background(), "POST", "http://x/", strings.NewReader(body)), ln.Addr().String())
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || string(b) != body {
			return fmt.Errorf("%d %q", resp.StatusCode, b)
		}
		return nil
	}
	if err := post("first"); err != nil {
		t.Fatal(err)
	}
	srv.SetKeepAlivesEnabled(false) // closes idle connections, as Shutdown does
	for deadline := time.Now().Add(5 * time.Second); closed.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the app did not close its idle connection")
		}
	}
	if err := post("second"); err != nil {
		t.Fatalf("request after the app closed its idle connection: %v", err)
	}
}

// BenchmarkAlive measures the check every reused app connection gets.
func BenchmarkAlive(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		if !alive(c) {
			b.Fatal("open connection reported dead")
		}
	}
}

// An app shutting down closes connections it never answered: idle ones
// in the pool (all of them at once) and new ones still queued on its
// closing listener. A request without a body is sent once more on a newly
// dialled connection (never a second pooled one); a request with a body
// is not sent again.
func TestH1ClientClosedBeforeAnswer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		method    string
		body      string
		pooled    int  // idle connections in the pool, all closed by the app
		dropFresh int  // new connections the app closes unanswered
		wantOK    bool // the request answered
		wantDials int  // connections dialled for it
	}{
		{name: "fresh conn dropped, GET retried on a new one", method: "GET", dropFresh: 1, wantOK: true, wantDials: 2},
		{name: "two pooled conns closed, the retry dials", method: "GET", pooled: 2, wantOK: true, wantDials: 1},
		{name: "dropped twice, GET fails after one retry", method: "GET", dropFresh: 2, wantDials: 2},
		{name: "POST with a body is never sent again", method: "POST", body: "x", dropFresh: 1, wantDials: 1},
		{name: "HEAD retried", method: "HEAD", dropFresh: 1, wantOK: true, wantDials: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// Connections accepted before armed (the pool's) are closed
			// unanswered at their next request once armed; of those after,
			// the first dropFresh are.
			var dials, armed, dropFresh atomic.Int32
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					dials.Add(1)
					pooled := armed.Load() == 0
					go func() {
						defer c.Close()
						br := bufio.NewReader(c)
						for {
							req, err := http.ReadRequest(br)
							if err != nil {
								return
							}
							_, _ = io.Copy(io.Discard, req.Body)
							if armed.Load() == 1 && (pooled || dropFresh.Add(-1) >= 0) {
								return // closed before a byte of the answer
							}
							_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
						}
					}()
				}
			}()
			c := &H1Client{}
			defer c.CloseIdleConnections(true)
			do := func(method, body string) (*http.Response, error) {
				var r io.Reader
				if body != "" {
					r = strings.NewReader(body)
				}
				return c.RoundTrip(newReq(t, context.Background(), method, "http://x/", r), ln.Addr().String())
			}
			// Fill the pool with tc.pooled connections, then have the app
			// close each of them unanswered at the next request.
			var held []*http.Response
			for range tc.pooled {
				resp, err := do("GET", "")
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, resp)
			}
			for _, resp := range held {
				_, _ = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			dials.Store(0)
			dropFresh.Store(int32(tc.dropFresh))
			armed.Store(1)
			resp, err := do(tc.method, tc.body)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("%s: %v", tc.method, err)
				}
				_, _ = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			} else if err == nil {
				t.Fatalf("%s answered %d, want an error", tc.method, resp.StatusCode)
			}
			if got := int(dials.Load()); got != tc.wantDials {
				t.Errorf("%d connections dialled, want %d", got, tc.wantDials)
			}
		})
	}
}
