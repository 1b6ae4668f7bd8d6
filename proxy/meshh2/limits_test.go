package meshh2

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawClient speaks frames directly to a lean server over loopback TCP.
type rawClient struct {
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer

	sc     *ServerConn   // the server it speaks to
	served chan struct{} // closed when the server's Serve returns
}

func newRawClient(t *testing.T, h http.Handler, opts ServerOptions) *rawClient {
	t.Helper()
	return newRawClientWrapped(t, h, opts, func(c net.Conn) net.Conn { return c })
}

// newRawClientWrapped is newRawClient with the server's conn wrapped.
func newRawClientWrapped(t *testing.T, h http.Handler, opts ServerOptions, wrap func(net.Conn) net.Conn) *rawClient {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sconn, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	opts.Handler = h
	sc := NewServerConn(wrap(sconn), opts)
	done := make(chan struct{})
	go func() { defer close(done); _ = sc.Serve() }()
	t.Cleanup(func() {
		_ = c.Close()
		within(t, 10*time.Second, "server exit", done)
	})
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	rc := &rawClient{c: c, fr: http2.NewFramer(c, bufio.NewReader(c)), sc: sc, served: done}
	rc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rc.enc = hpack.NewEncoder(&rc.hb)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := rc.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return rc
}

func (rc *rawClient) headers(t *testing.T, id uint32, end bool, fields ...string) {
	t.Helper()
	rc.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rc.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// until reads frames until match returns true.
func (rc *rawClient) until(t *testing.T, what string, match func(http2.Frame) bool) {
	t.Helper()
	for {
		f, err := rc.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(f) {
			return
		}
	}
}

func TestServerLimits(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
	})
	get := func(path string) []string {
		return []string{":method", "GET", ":scheme", "https", ":authority", "x", ":path", path}
	}
	cases := []struct {
		name string
		run  func(t *testing.T, rc *rawClient)
	}{
		{"max concurrent streams", func(t *testing.T, rc *rawClient) {
			rc.headers(t, 1, true, get("/block")...)
			rc.headers(t, 3, true, get("/block")...)
			rc.headers(t, 5, true, get("/block")...)
			rc.until(t, "REFUSED_STREAM on stream 5", func(f http2.Frame) bool {
				rst, ok := f.(*http2.RSTStreamFrame)
				if ok && rst.StreamID != 5 {
					t.Fatalf("stream %d reset, want 5", rst.StreamID)
				}
				return ok && rst.ErrCode == http2.ErrCodeRefusedStream
			})
		}},
		{"header list too large", func(t *testing.T, rc *rawClient) {
			big := strings.Repeat("v", 15000)
			fields := get("/")
			for i := range 80 {
				fields = append(fields, "x-big-"+string(rune('a'+i%26))+strings.Repeat("k", i), big)
			}
			// Sent as HEADERS + CONTINUATION frames of at most 16 KiB.
			rc.hb.Reset()
			for i := 0; i+1 < len(fields); i += 2 {
				_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			block := rc.hb.Bytes()
			first := block[:16384]
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true})
			rest := block[16384:]
			for len(rest) > 0 {
				n := min(len(rest), 16384)
				_ = rc.fr.WriteContinuation(1, n == len(rest), rest[:n])
				rest = rest[n:]
			}
			// Either a 431 or a connection error: never a crash, never
			// the handler.
			for {
				f, err := rc.fr.ReadFrame()
				if err != nil {
					return
				}
				if mh, ok := f.(*http2.MetaHeadersFrame); ok {
					if st := mh.PseudoValue("status"); st != "431" {
						t.Fatalf("status %s, want 431", st)
					}
					return
				}
				if ga, ok := f.(*http2.GoAwayFrame); ok {
					if ga.ErrCode == http2.ErrCodeNo {
						t.Fatalf("GOAWAY %v", ga.ErrCode)
					}
					return
				}
			}
		}},
		{"even stream id", func(t *testing.T, rc *rawClient) {
			rc.headers(t, 2, true, get("/")...)
			rc.until(t, "GOAWAY", func(f http2.Frame) bool {
				ga, ok := f.(*http2.GoAwayFrame)
				return ok && ga.ErrCode == http2.ErrCodeProtocol
			})
		}},
		{"data beyond window", func(t *testing.T, rc *rawClient) {
			rc.headers(t, 1, false, ":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/block")
			chunk := make([]byte, 16384)
			// 5 MiB without waiting for WINDOW_UPDATE: beyond the conn window.
			go func() {
				for range 320 {
					if rc.fr.WriteData(1, false, chunk) != nil {
						return
					}
				}
			}()
			rc.until(t, "FLOW_CONTROL_ERROR", func(f http2.Frame) bool {
				ga, ok := f.(*http2.GoAwayFrame)
				if ok && ga.ErrCode != http2.ErrCodeFlowControl {
					t.Fatalf("GOAWAY %v, want FLOW_CONTROL_ERROR", ga.ErrCode)
				}
				rst, rok := f.(*http2.RSTStreamFrame)
				return ok || rok && rst.ErrCode == http2.ErrCodeFlowControl
			})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := newRawClient(t, h, ServerOptions{MaxConcurrentStreams: 2})
			tc.run(t, rc)
		})
	}
}
