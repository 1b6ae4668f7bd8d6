package loadgen

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// streamServer runs ServeStream on loopback; with connect, each connection
// must first send a CONNECT for that authority. It counts connections.
func streamServer(t *testing.T, connect string) (addr string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	conns = new(atomic.Int64)
	out := make([]byte, 1000) // smaller than a request: chunks are reused
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				if connect != "" {
					br := bufio.NewReader(c)
					req, err := http.ReadRequest(br)
					if err != nil || req.Method != http.MethodConnect || req.Host != connect || br.Buffered() != 0 {
						_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
						_ = c.Close()
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				}
				_ = ServeStream(c, out, 5*time.Second)
			}()
		}
	}()
	return ln.Addr().String(), conns
}

func TestStreamWorkers(t *testing.T) {
	tests := []struct {
		name      string
		connect   string // what the server wants
		target    StreamTarget
		wantConns int64
		wantOK    int64
	}{
		{"kept connection", "", StreamTarget{Size: 100_000}, 2, 20},
		{"new connection per request", "", StreamTarget{Size: 64, NewConnPerRequest: true}, 20, 20},
		{"CONNECT first", "echo.bench:9000", StreamTarget{Size: 5000, Connect: "echo.bench:9000"}, 2, 20},
		{"CONNECT refused", "echo.bench:9000", StreamTarget{Size: 5000, Connect: "other:1"}, 20, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, conns := streamServer(t, tt.connect)
			tt.target.Addr = addr
			workers, closer := StreamWorkers(tt.target, 2)
			res, err := Run(context.Background(), Config{Rate: 200, Duration: 100 * time.Millisecond}, workers)
			_ = closer.Close()
			if err != nil {
				t.Fatal(err)
			}
			if res.Completed != tt.wantOK || res.Completed+res.Errors != 20 {
				t.Errorf("completed %d errors %d (first %q), want %d completed of 20", res.Completed, res.Errors, res.FirstError, tt.wantOK)
			}
			if got := conns.Load(); got != tt.wantConns {
				t.Errorf("server saw %d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

func TestHTTPWorkersPostBodyAndClose(t *testing.T) {
	var got, conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || r.Method != http.MethodPost || n != 300_000 {
			http.Error(w, "want a POST of 300000 bytes", http.StatusBadRequest)
			return
		}
		got.Add(n)
		_, _ = w.Write(make([]byte, 200_000))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	workers, closer := HTTPWorkers(HTTPTarget{Addr: srv.Listener.Addr().String(), Body: make([]byte, 300_000), Close: true}, 2)
	defer closer.Close()
	res, err := Run(context.Background(), Config{Rate: 100, Duration: 100 * time.Millisecond}, workers)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 10 || got.Load() != 3_000_000 || conns.Load() != 10 {
		t.Fatalf("completed %d (first error %q), server read %d bytes over %d connections; want 10, 3000000, 10", res.Completed, res.FirstError, got.Load(), conns.Load())
	}
}
