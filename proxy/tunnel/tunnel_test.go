package tunnel

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/balance"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/route"
)

// peer is the far end of a stream: it answers an Upgrade request with 101
// (anything else it reads first is echoed), then echoes every byte.
func peer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if b, _ := br.Peek(4); string(b) == "GET " {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				}
				_, _ = io.Copy(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestStages(t *testing.T) {
	far := peer(t)
	resolve := func(_ context.Context, a string) (bool, *balance.Balancer, error) {
		return a == "db.ns:5432" || a == "ws.ns:80", balance.New(), nil
	}
	tests := []struct {
		name     string
		request  string // raw HTTP/1.1 request
		openErr  *proxyerr.Error
		wantHead string // status line prefix
		wantEcho bool   // bytes sent after the head come back
		wantNext bool   // the request went on to the next stage
		wantDst  string // the destination the stream was opened to
	}{
		{name: "CONNECT: a stream to the destination", request: "CONNECT db.ns:5432 HTTP/1.1\r\nHost: db.ns:5432\r\n\r\n", wantHead: "HTTP/1.1 200 Connection established", wantEcho: true, wantDst: "db.ns:5432"},
		{name: "CONNECT without a port", request: "CONNECT db.ns HTTP/1.1\r\nHost: db.ns\r\n\r\n", wantHead: "HTTP/1.1 400"},
		{name: "CONNECT to an unknown service", request: "CONNECT nope.ns:5432 HTTP/1.1\r\nHost: nope.ns:5432\r\n\r\n", wantHead: "HTTP/1.1 502"},
		{name: "CONNECT, no endpoint can be reached", request: "CONNECT db.ns:5432 HTTP/1.1\r\nHost: db.ns:5432\r\n\r\n", openErr: proxyerr.New(503, proxyerr.ReasonNoEndpoints, "no endpoints for db.ns:5432"), wantHead: "HTTP/1.1 503"},
		{name: "Upgrade: the request written to the peer, then a stream", request: "GET /chat HTTP/1.1\r\nHost: ws.ns\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", wantHead: "HTTP/1.1 101", wantEcho: true, wantDst: "ws.ns:80"},
		{name: "plain request: on to the next stage", request: "GET / HTTP/1.1\r\nHost: ws.ns\r\n\r\n", wantHead: "HTTP/1.1 204", wantNext: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := metrics.New(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			opened := make(chan string, 1)
			s := &Stage{
				Route: &route.Stage{Resolve: resolve},
				Open: func(ctx context.Context, d pipeline.Dest, _ uint16) (net.Conn, metrics.Key, *proxyerr.Error) {
					key := metrics.Key{Direction: metrics.Outbound, DstService: d.Dst}
					if tt.openErr != nil {
						return nil, key, tt.openErr
					}
					opened <- d.Dst
					var dl net.Dialer
					c, err := dl.DialContext(ctx, "tcp", far)
					if err != nil {
						return nil, key, proxyerr.New(502, proxyerr.ReasonConnectError, err.Error())
					}
					return c, key, nil
				},
				Splice: func(app, peer net.Conn, _ metrics.Key) error { _, _, err := forward.Splice(app, peer); return err },
			}
			nextReached := make(chan bool, 1)
			next := pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
				nextReached <- true
				x.W.WriteHeader(http.StatusNoContent)
				x.Wrote(http.StatusNoContent, "", nil)
				return nil
			})
			errs := &proxyerr.Renderer{Direction: metrics.Outbound, Identity: "spiffe://td/ns/a/sa/a", Log: ratelog.New(nil, 0)}
			srv := httptest.NewServer(&pipeline.Observe{Direction: metrics.Outbound, Metrics: m, Errors: errs,
				Next: pipeline.Chain(next, s.Connect, s.Route.Layer, s.Upgrade)})
			defer srv.Close()
			c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, tt.request); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil || !strings.HasPrefix(line, tt.wantHead) {
				t.Fatalf("status line %q (%v), want %q...", line, err, tt.wantHead)
			}
			if tt.wantEcho {
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						t.Fatal(err)
					}
					if l == "\r\n" {
						break
					}
				}
				if _, err := io.WriteString(c, "ping"); err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 4)
				if _, err := io.ReadFull(br, b); err != nil || string(b) != "ping" {
					t.Fatalf("echo %q, %v", b, err)
				}
			}
			select {
			case <-nextReached:
				if !tt.wantNext {
					t.Error("the next stage was reached")
				}
			default:
				if tt.wantNext {
					t.Error("the next stage was not reached")
				}
			}
			select {
			case d := <-opened:
				if d != tt.wantDst {
					t.Errorf("stream opened to %q, want %q", d, tt.wantDst)
				}
			default:
				if tt.wantDst != "" {
					t.Errorf("no stream opened, want one to %q", tt.wantDst)
				}
			}
		})
	}
}
