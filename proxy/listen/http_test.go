package listen

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// h2cServer serves every accepted loopback connection as an app's
// prior-knowledge HTTP/2 (ServeHTTP2) with h.
type h2cServer struct {
	srv  *HTTP
	reg  *prometheus.Registry
	addr string
	wg   sync.WaitGroup // ServeHTTP2 calls
}

func startH2C(t *testing.T, h http.Handler) *h2cServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewHTTP(HTTPConfig{
		Direction: metrics.Outbound, Metrics: m, Limiter: ratelog.New(nil, 0),
		Errors: &proxyerr.Renderer{Direction: metrics.Outbound}, Handler: h, MaxConcurrentStreams: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &h2cServer{srv: srv, reg: reg, addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.srv.ServeHTTP2(context.Background(), c) })
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		var wg sync.WaitGroup
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.srv.Shutdown(ctx, &wg)
		wg.Wait()
		s.wg.Wait()
	})
	return s
}

// h2cClient speaks prior-knowledge HTTP/2 to addr, as an app would.
func h2cClient(addr string) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		},
		Protocols: &p,
	}}
}

// TestServeHTTP2 holds the app-facing h2c server (proxy/meshh2) to what
// x/net's server did for callers: requests reach the handler, a CONNECT
// too (the handler answers it), and an Expect: 100-continue is answered
// by the server when the body is first read, not passed on.
func TestServeHTTP2(t *testing.T) {
	type seen struct {
		method, host, urlHost, expect, body string
	}
	tests := []struct {
		name       string
		req        func(addr string) *http.Request
		wantStatus int
		want       seen
	}{
		{
			name: "GET",
			req: func(addr string) *http.Request {
				r, _ := http.NewRequest(http.MethodGet, "http://svc.example/x", nil)
				return r
			},
			wantStatus: http.StatusOK,
			want:       seen{method: "GET", host: "svc.example"},
		},
		{
			name: "Expect 100-continue answered, not passed on",
			req: func(addr string) *http.Request {
				r, _ := http.NewRequest(http.MethodPut, "http://svc.example/up", strings.NewReader("abc"))
				r.Header.Set("Expect", "100-continue")
				return r
			},
			wantStatus: http.StatusOK,
			want:       seen{method: "PUT", host: "svc.example", body: "abc"},
		},
		{
			name: "CONNECT reaches the handler",
			req: func(addr string) *http.Request {
				return &http.Request{Method: http.MethodConnect, URL: &url.URL{Scheme: "http", Host: "db.example:5432"}, Host: "db.example:5432", Header: http.Header{}}
			},
			wantStatus: http.StatusMethodNotAllowed,
			want:       seen{method: "CONNECT", host: "db.example:5432", urlHost: "db.example:5432"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan seen, 1)
			s := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- seen{method: r.Method, host: r.Host, urlHost: r.URL.Host, expect: r.Header.Get("Expect"), body: string(b)}
				if r.Method == http.MethodConnect {
					w.WriteHeader(http.StatusMethodNotAllowed)
					return
				}
				_, _ = io.WriteString(w, "ok")
			}))
			c := h2cClient(s.addr)
			defer c.CloseIdleConnections()
			resp, err := c.Do(tt.req(s.addr))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus || resp.ProtoMajor != 2 {
				t.Errorf("response %s %s, want %d over HTTP/2", resp.Proto, resp.Status, tt.wantStatus)
			}
			if g := <-got; g != tt.want {
				t.Errorf("handler saw %+v, want %+v", g, tt.want)
			}
		})
	}
}

// TestServeHTTP2ProtocolErrors: a client's connection errors are answered
// with GOAWAY and counted in trellis_protocol_errors_total by cause, as
// x/net's ErrorLog lines were.
func TestServeHTTP2ProtocolErrors(t *testing.T) {
	tests := []struct {
		name      string
		write     func(fr *http2.Framer) error
		wantCode  http2.ErrCode
		wantCause string
	}{
		{"broken HPACK", func(fr *http2.Framer) error {
			// Index 0 is never valid in HPACK.
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x80}, EndHeaders: true, EndStream: true})
		}, http2.ErrCodeCompression, "compression_error"},
		{"DATA on stream 0", func(fr *http2.Framer) error {
			return fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x"))
		}, http2.ErrCodeProtocol, "protocol_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startH2C(t, http.NotFoundHandler())
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			var out bytes.Buffer
			out.WriteString(http2.ClientPreface)
			fr := http2.NewFramer(&out, c)
			if err := fr.WriteSettings(); err != nil {
				t.Fatal(err)
			}
			if err := tt.write(fr); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(out.Bytes()); err != nil {
				t.Fatal(err)
			}
			var code http2.ErrCode = 1 << 31
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					break
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					code = ga.ErrCode
				}
			}
			if code != tt.wantCode {
				t.Errorf("GOAWAY code %v, want %v", code, tt.wantCode)
			}
			deadline := time.Now().Add(5 * time.Second)
			for counter(t, s.reg, "trellis_protocol_errors_total", map[string]string{"direction": metrics.Outbound, "cause": tt.wantCause}) != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("trellis_protocol_errors_total{cause=%q} never 1", tt.wantCause)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestServeHTTP2Drain: Shutdown lets a request in flight finish (its
// client is told GOAWAY), and wg is done once it has.
func TestServeHTTP2Drain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	s := startH2C(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	}))
	c := h2cClient(s.addr)
	defer c.CloseIdleConnections()
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("http://svc.example/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	var wg sync.WaitGroup
	s.srv.Shutdown(context.Background(), &wg)
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	select {
	case <-drained:
		t.Fatal("drain ended with a request in flight")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if r := <-res; r.err != nil || r.body != "done" {
		t.Fatalf("in-flight request: %q, %v", r.body, r.err)
	}
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
		t.Fatal("drain did not end after the last request")
	}
}

// counter is the value of the counter name with the given labels (0 when
// absent).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _ := grpctest.Metric(t, reg, name, labels)
	return v
}
