package meshh2

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawServer speaks frames directly to a lean client over loopback TCP.
type rawServer struct {
	c        net.Conn
	fr       *http2.Framer
	enc      *hpack.Encoder
	hb       bytes.Buffer
	maxFrame uint32 // client's SETTINGS_MAX_FRAME_SIZE (0: absent)
	pending  <-chan roundTripResult
}

func newRawServer(t *testing.T) (*rawServer, *ClientConn) {
	t.Helper()
	return newRawServerWrapped(t, func(c net.Conn) net.Conn { return c })
}

// newRawServerWrapped is newRawServer with the client's conn wrapped.
func newRawServerWrapped(t *testing.T, wrap func(net.Conn) net.Conn) (*rawServer, *ClientConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(wrap(nc), ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close(); _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, pre); err != nil || string(pre) != http2.ClientPreface {
		t.Fatalf("client preface %q: %v", pre, err)
	}
	rs := &rawServer{c: c, fr: http2.NewFramer(c, br)}
	rs.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	rs.fr.SetMaxReadFrameSize(1 << 24)
	rs.enc = hpack.NewEncoder(&rs.hb)
	f, err := rs.fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first client frame %T, want SETTINGS", f)
	}
	rs.maxFrame, _ = sf.Value(http2.SettingMaxFrameSize)
	if err := rs.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := rs.fr.WriteSettingsAck(); err != nil {
		t.Fatal(err)
	}
	return rs, cc
}

// request starts a GET on cc and returns its stream's outcome channel;
// the raw server has read the request HEADERS when it returns.
func (rs *rawServer) request(t *testing.T, cc *ClientConn) <-chan roundTripResult {
	t.Helper()
	ch := make(chan roundTripResult, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
		res, err := cc.RoundTrip(req)
		if err != nil {
			ch <- roundTripResult{err: err}
			return
		}
		body, err := io.ReadAll(res.Body)
		ch <- roundTripResult{body: body, err: err}
	}()
	rs.pending = ch
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the request: %v", err)
		}
		if _, ok := f.(*http2.MetaHeadersFrame); ok {
			return ch
		}
	}
}

type roundTripResult struct {
	body []byte
	err  error
}

func (rs *rawServer) headers(t *testing.T, id uint32, end bool, fields ...string) {
	t.Helper()
	rs.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = rs.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := rs.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: rs.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
}

// expectFrom reads the client's frames until one matches want (as in the
// server test: GOAWAY code or RST_STREAM code on a stream).
func (rs *rawServer) expectFrom(t *testing.T, want outcome) {
	t.Helper()
	_ = rs.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rs.fr.ReadFrame()
		if err != nil {
			t.Fatalf("want %+v, got read error %v", want, err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if want.conn && f.ErrCode == want.code {
				return
			}
			t.Fatalf("want %+v, got GOAWAY %v", want, f.ErrCode)
		case *http2.RSTStreamFrame:
			if !want.conn && f.StreamID == want.stream && f.ErrCode == want.code {
				return
			}
			t.Fatalf("want %+v, got RST_STREAM %d %v", want, f.StreamID, f.ErrCode)
		}
	}
}

// TestClientConformance sends the lean client the protocol violations
// the server side was fixed for, where the client parses them too.
func TestClientConformance(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, rs *rawServer, cc *ClientConn) outcome
		// bodyErr: the caller's body read must fail (malformed response).
		bodyErr bool
	}{
		{"SETTINGS ENABLE_PUSH 2", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			_ = rs.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
			return goAway(http2.ErrCodeProtocol)
		}, false},
		{"SETTINGS MAX_FRAME_SIZE too small", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			_ = rs.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 100})
			return goAway(http2.ErrCodeProtocol)
		}, false},
		{"DATA on idle stream", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			_ = rs.fr.WriteData(1, true, []byte("x"))
			return goAway(http2.ErrCodeProtocol)
		}, false},
		{"HEADERS on a pushed (even) stream", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			rs.headers(t, 2, true, ":status", "200")
			return goAway(http2.ErrCodeProtocol)
		}, false},
		{"DATA above the advertised max frame size", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			if rs.maxFrame == 0 {
				t.Fatal("client SETTINGS has no SETTINGS_MAX_FRAME_SIZE")
			}
			rs.request(t, cc)
			rs.headers(t, 1, false, ":status", "200")
			_ = rs.fr.WriteData(1, false, make([]byte, rs.maxFrame+1))
			return goAway(http2.ErrCodeFrameSize)
		}, false},
		{"stream window overflow", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			rs.request(t, cc)
			_ = rs.fr.WriteWindowUpdate(1, 1<<31-1)
			return rstStream(1, http2.ErrCodeFlowControl)
		}, true},
		{"DATA shorter than content-length", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			rs.request(t, cc)
			rs.headers(t, 1, false, ":status", "200", "content-length", "4")
			_ = rs.fr.WriteData(1, true, []byte("abc"))
			return rstStream(1, http2.ErrCodeProtocol)
		}, true},
		{"DATA longer than content-length", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			rs.request(t, cc)
			rs.headers(t, 1, false, ":status", "200", "content-length", "2")
			_ = rs.fr.WriteData(1, true, []byte("abc"))
			return rstStream(1, http2.ErrCodeProtocol)
		}, true},
		{"content-length not a number", func(t *testing.T, rs *rawServer, cc *ClientConn) outcome {
			rs.request(t, cc)
			rs.headers(t, 1, false, ":status", "200", "content-length", "x")
			return rstStream(1, http2.ErrCodeProtocol)
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rs, cc := newRawServer(t)
			rs.expectFrom(t, tc.run(t, rs, cc))
			if !tc.bodyErr {
				return
			}
			select {
			case r := <-rs.pending:
				if r.err == nil {
					t.Fatalf("the caller read %q without an error from a malformed response", r.body)
				}
				t.Logf("caller's error: %v", r.err)
			case <-time.After(10 * time.Second):
				t.Fatal("the caller got no result")
			}
		})
	}
}

// TestClientContentLengthMatches is the guard: a body matching its
// content-length (and a HEAD response declaring one) reads fine.
func TestClientContentLengthMatches(t *testing.T) {
	rs, cc := newRawServer(t)
	ch := rs.request(t, cc)
	rs.headers(t, 1, false, ":status", "200", "content-length", "3")
	_ = rs.fr.WriteData(1, true, []byte("abc"))
	select {
	case r := <-ch:
		if r.err != nil || string(r.body) != "abc" {
			t.Fatalf("body %q, err %v", r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no response")
	}
}

// TestClientRequestLength: the lean client sends exactly the declared
// ContentLength (a stale Content-Length header cannot disagree with the
// DATA, which x/net's and our server reject), and a short body is a local
// error, inline (small) or streamed.
func TestClientRequestLength(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Len", strconv.Itoa(len(b)))
	})
	big := inlineBodyMax + 1
	cases := []struct {
		name    string
		declare int64  // req.ContentLength
		header  string // a stale Content-Length header ("" none)
		body    int    // bytes the body reader yields
		wantLen string // what the handler must read; "" = the request fails
	}{
		{"inline, stale header", 5, "3", 5, "5"},
		{"streamed, stale header", int64(big), "7", big, strconv.Itoa(big)},
		{"streamed, body longer than declared", int64(big), "", big + 100, strconv.Itoa(big)},
		{"streamed, body shorter than declared", int64(big + 10), "", big, ""},
	}
	for _, kind := range []string{"lean", "xnet"} {
		tt := newTestTLS(t)
		s := startServer(t, kind, tt, h)
		c := dialClient(t, "lean", tt, s.addr)
		for _, tc := range cases {
			t.Run(kind+"-server/"+tc.name, func(t *testing.T) {
				req, _ := http.NewRequest(http.MethodPost, "https://x/", io.NopCloser(bytes.NewReader(make([]byte, tc.body))))
				req.ContentLength = tc.declare
				if tc.header != "" {
					req.Header.Set("Content-Length", tc.header)
				}
				res, err := c.RoundTrip(req)
				if tc.wantLen == "" {
					if err == nil {
						_ = res.Body.Close()
						t.Fatalf("short body: status %d, X-Len %s, want an error", res.StatusCode, res.Header.Get("X-Len"))
					}
					if !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK || res.Header.Get("X-Len") != tc.wantLen {
					t.Fatalf("status %d, handler read %q bytes, want %s", res.StatusCode, res.Header.Get("X-Len"), tc.wantLen)
				}
			})
		}
	}
}
