package forward

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// scriptedApp answers each connection's requests with the canned byte strings
// in order, one per request head it reads, and counts connections.
func scriptedApp(t *testing.T, answers ...string) (addr string, conns chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	conns = make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- struct{}{}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for _, a := range answers {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(c, a); err != nil {
						return
					}
				}
				_, _ = io.Copy(io.Discard, br)
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// TestH1ClientDoesNotReuseConnWithStrayBytes: bytes an app sent beyond
// its response (a body longer than its Content-Length, a body on a HEAD
// answer) must never be read as the response to the next request on that
// connection, which may be another caller's (response-queue poisoning,
// RFC 9112 §9.3): such a connection is closed, not pooled.
func TestH1ClientDoesNotReuseConnWithStrayBytes(t *testing.T) {
	for _, tc := range []struct{ name, method, first string }{
		{"body longer than content-length", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" +
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked"},
		{"body on a HEAD answer", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" +
			"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nleaked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, conns := scriptedApp(t, tc.first, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh")
			c := &H1Client{}
			defer c.CloseIdleConnections(true)
			resp, err := c.RoundTrip(newReq(t, context.Background(), tc.method, "http://x/", nil), addr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			resp, err = c.RoundTrip(newReq(t, context.Background(), "GET", "http://x/", nil), addr)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if strings.Contains(string(b), "leaked") {
				t.Fatalf("the second request got the stray bytes of the first response: %q", b)
			}
			if n := len(conns); n != 2 {
				t.Errorf("app saw %d connections, want 2 (the first one closed)", n)
			}
		})
	}
}

// TestH1ClientRefusesNonTokenMethod: a method that is not a token (a tab
// from an HTTP/2 peer's :method) would split the request line differently
// at the app than at the proxy; it is refused, never written.
func TestH1ClientRefusesNonTokenMethod(t *testing.T) {
	addr, conns := scriptedApp(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	for _, m := range []string{"GET\t/admin", "GET /admin", "G\x00T", "GET\x7f", "(GET)"} {
		r := newReq(t, context.Background(), "GET", "http://x/x", nil)
		r.Method = m
		if _, err := c.RoundTrip(r, addr); err == nil {
			t.Errorf("method %q was sent", m)
		}
	}
	if n := len(conns); n != 0 {
		t.Errorf("app saw %d connections for refused methods", n)
	}
}

// TestMeshTrailersNeverForwarded: trellis-* fields are the proxies' own;
// as trailers they reach neither the app (request) nor the client
// (response), like the headers.
func TestMeshTrailersNeverForwarded(t *testing.T) {
	got := make(chan http.Header, 1)
	addr, _, _ := h1App(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		got <- r.Trailer
	})
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	r := newReq(t, context.Background(), "POST", "http://x/", io.NopCloser(strings.NewReader("body")))
	r.ContentLength = -1
	r.Trailer = http.Header{"Trellis-Target-Port": {"4191"}, "X-Ok": {"1"}}
	resp, err := c.RoundTrip(r, addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	tr := <-got
	if _, ok := tr["Trellis-Target-Port"]; ok || tr.Get("X-Ok") != "1" {
		t.Errorf("the app saw trailers %v", tr)
	}

	rec := httptest.NewRecorder()
	up := &http.Response{StatusCode: 200, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("x")),
		Trailer: http.Header{"Trellis-Proxy-Error": {"forged"}, "X-Ok": {"1"}}, ContentLength: -1}
	if _, err := WriteResponse(rec, up); err != nil {
		t.Fatal(err)
	}
	if rt := rec.Result().Trailer; rt.Get("Trellis-Proxy-Error") != "" || rt.Get("X-Ok") != "1" {
		t.Errorf("the client got trailers %v", rt)
	}
}
