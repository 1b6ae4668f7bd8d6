package forward

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// rawApp answers every connection's first request head with resp and
// reports when the connection ended (what it read of the body, and how).
func rawApp(t *testing.T, resp string, answer bool) (string, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					ended <- err
					return
				}
				if answer {
					_, _ = io.WriteString(c, resp)
				}
				_, err = io.Copy(io.Discard, req.Body)
				ended <- err
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), ended
}

// failingBody yields some bytes, then a framing error, as the HTTP/1
// server's body does for a malformed chunk.
type failingBody struct{ n int }

var errFraming = errors.New("malformed chunk")

func (b *failingBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		b.n++
		return copy(p, "abc"), nil
	}
	return 0, errFraming
}

func (b *failingBody) Close() error { return nil }

// Finding 2: the app waits for the rest of a body that will never come
// while the client proxy waits for its answer; the body's failure must
// close the app connection at once and be returned as the cause.
func TestH1ClientBodySourceErrorClosesAppConn(t *testing.T) {
	addr, ended := rawApp(t, "", false)
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	req := newReq(t, context.Background(), http.MethodPost, "http://a/", &failingBody{})
	req.ContentLength = -1
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := c.RoundTrip(req, addr); done <- err }()
	select {
	case err := <-done:
		t.Logf("RoundTrip returned after %v: %v", time.Since(start), err)
		if _, ok := RequestBodyFault(err); !ok || !errors.Is(err, errFraming) {
			t.Fatalf("want the body's error as a client fault, got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RoundTrip still blocked after 10 s")
	}
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the app read a complete body")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the app connection is still open after 10 s")
	}
}

func TestH1ClientRefusesAmbiguousResponses(t *testing.T) {
	for name, resp := range map[string]string{
		"TE and CL":   "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"obs-fold":    "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
		"bare LF":     "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
		"two CL":      "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\nx",
		"gzip coding": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			addr, _ := rawApp(t, resp, true)
			c := &H1Client{}
			defer c.CloseIdleConnections(true)
			_, err := c.RoundTrip(newReq(t, context.Background(), http.MethodGet, "http://a/", nil), addr)
			if reason, ok := AppFault(err); !ok || reason == "" {
				t.Fatalf("want a malformed-response error, got %v", err)
			}
		})
	}
	// A malformed chunk in the body: the body read fails.
	addr, _ := rawApp(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", true)
	c := &H1Client{}
	defer c.CloseIdleConnections(true)
	resp, err := c.RoundTrip(newReq(t, context.Background(), http.MethodGet, "http://a/", nil), addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil || !strings.Contains(err.Error(), "bare LF") {
		t.Fatalf("body read: %v", err)
	}
}
