package listen

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// dispatched is what a Listener handed its hooks.
type dispatched struct {
	proto    detect.Protocol
	orig     netip.AddrPort
	prefix   string // what the served conn replays first
	before   bool   // Before took the connection
	notFound bool   // closed: no original destination
}

func TestListener(t *testing.T) {
	orig := netip.MustParseAddrPort("10.1.2.3:8080")
	opaque := netip.MustParseAddrPort("10.1.2.3:3306")
	tests := []struct {
		name   string
		send   string
		orig   *netip.AddrPort // nil: explicit mode
		noOrig bool            // OrigDst fails
		want   dispatched
		metric string // protocol label counted with result ok
	}{
		{name: "http1", send: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", want: dispatched{proto: detect.HTTP1, prefix: "GET / HTTP/1.1\r\n"}, metric: "http1"},
		{name: "http2 preface", send: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", want: dispatched{proto: detect.HTTP2, prefix: "PRI * HTTP/2.0"}, metric: "http2"},
		{name: "opaque bytes", send: "\x00\x01binary", want: dispatched{proto: detect.Opaque, prefix: "\x00\x01binary"}, metric: "opaque"},
		{name: "transparent keeps the original destination", send: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", orig: &orig, want: dispatched{proto: detect.HTTP1, orig: orig, prefix: "GET /"}, metric: "http1"},
		{name: "Before takes an opaque port undetected", send: "GET / HTTP/1.1\r\n\r\n", orig: &opaque, want: dispatched{orig: opaque, before: true}},
		{name: "no original destination: closed", send: "GET / HTTP/1.1\r\n\r\n", orig: &orig, noOrig: true, want: dispatched{notFound: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			m, err := metrics.New(reg)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan dispatched, 1)
			cfg := Config{
				Direction: metrics.Outbound, Metrics: m, DetectTimeout: 200 * time.Millisecond,
				Dispatch: func(c Conn) {
					defer c.Raw.Close()
					b := make([]byte, len(tt.want.prefix))
					_, _ = io.ReadFull(c.Conn, b)
					got <- dispatched{proto: c.Detected.Protocol, orig: c.Orig, prefix: string(b)}
				},
			}
			if tt.orig != nil {
				cfg.OrigDst = func(net.Conn) (netip.AddrPort, error) {
					if tt.noOrig {
						return netip.AddrPort{}, errors.New("no SO_ORIGINAL_DST")
					}
					return *tt.orig, nil
				}
				cfg.Before = func(c net.Conn, o netip.AddrPort) bool {
					if o != opaque {
						return false
					}
					_ = c.Close()
					got <- dispatched{orig: o, before: true}
					return true
				}
			}
			l := New(cfg)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- l.Serve(ln) }()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tt.send); err != nil {
				t.Fatal(err)
			}
			var d dispatched
			if tt.want.notFound {
				// The listener closes the connection: the read ends.
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatal("connection without an original destination was not closed")
				}
				d.notFound = true
			} else {
				select {
				case d = <-got:
				case <-time.After(10 * time.Second):
					t.Fatal("nothing dispatched after 10s")
				}
			}
			if d.proto != tt.want.proto || d.orig != tt.want.orig || d.before != tt.want.before || d.notFound != tt.want.notFound ||
				!strings.HasPrefix(d.prefix, tt.want.prefix) {
				t.Errorf("dispatched %+v, want %+v", d, tt.want)
			}
			l.Close()
			if err := <-served; err != nil {
				t.Errorf("Serve after Close: %v", err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := l.Wait(ctx); err != nil {
				t.Errorf("Wait: %v", err)
			}
			if tt.metric != "" {
				if n := detected(t, reg, tt.metric); n != 1 {
					t.Errorf("detect{protocol=%s,result=ok} = %v, want 1", tt.metric, n)
				}
			}
		})
	}
}

// TestServeAfterClose: a listener handed over after Close (a drain racing
// a late Serve) is closed at once, not served.
func TestServeAfterClose(t *testing.T) {
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	l := New(Config{Direction: metrics.Inbound, Metrics: m, Dispatch: func(c Conn) { _ = c.Raw.Close() }})
	l.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Serve(ln); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener still open after Serve on a closed Listener: %v", err)
	}
}

// detected is trellis_protocol_detect_total{direction=outbound,protocol,result=ok}.
func detected(t *testing.T, reg *prometheus.Registry, protocol string) float64 {
	t.Helper()
	return counter(t, reg, "trellis_protocol_detect_total", map[string]string{"direction": metrics.Outbound, "protocol": protocol, "result": "ok"})
}
