package meshh2

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// outcome is what the server must answer to a protocol violation: a
// GOAWAY with code (conn), a RST_STREAM on stream with code, or a
// response status on stream (a valid request used as a guard).
type outcome struct {
	conn   bool
	stream uint32
	code   http2.ErrCode
	status string
	// orClosed also accepts RST_STREAM(STREAM_CLOSED) on stream: the
	// server may still see the stream half-closed when its response has
	// been flushed but not yet recorded.
	orClosed bool
}

func goAway(code http2.ErrCode) outcome               { return outcome{conn: true, code: code} }
func rstStream(id uint32, code http2.ErrCode) outcome { return outcome{stream: id, code: code} }
func respond(id uint32, status string) outcome        { return outcome{stream: id, status: status} }

// expect reads frames until the outcome; anything contradicting it (a
// GOAWAY or RST with another code, a response where an error was due, the
// connection ending without the GOAWAY) fails the test.
func (rc *rawClient) expect(t *testing.T, want outcome) {
	t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := rc.fr.ReadFrame()
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
			if !want.conn && f.StreamID == want.stream && want.status == "" && f.ErrCode == want.code {
				return
			}
			if want.orClosed && f.StreamID == want.stream && f.ErrCode == http2.ErrCodeStreamClosed {
				return
			}
			t.Fatalf("want %+v, got RST_STREAM %d %v", want, f.StreamID, f.ErrCode)
		case *http2.MetaHeadersFrame:
			if f.StreamID == want.stream && want.status == "" && !want.conn {
				t.Fatalf("want %+v, got a response %s: the request reached the handler", want, f.PseudoValue("status"))
			}
			if f.StreamID == want.stream && want.status != "" {
				if got := f.PseudoValue("status"); got != want.status {
					t.Fatalf("stream %d: status %s, want %s", f.StreamID, got, want.status)
				}
				return
			}
		}
	}
}

// waitEnd reads frames until stream id has sent END_STREAM.
func (rc *rawClient) waitEnd(t *testing.T, id uint32) {
	t.Helper()
	rc.until(t, "END_STREAM", func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			return f.StreamID == id && f.StreamEnded()
		case *http2.DataFrame:
			return f.StreamID == id && f.StreamEnded()
		}
		return false
	})
}

// TestServerConformance sends the protocol violations h2spec found the
// lean server accepting (RFC 9113 sections in the names).
func TestServerConformance(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/block":
			<-r.Context().Done()
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_, _ = w.Write(b)
		}
	})
	req := func(method, path string, extra ...string) []string {
		return append([]string{":method", method, ":scheme", "https", ":authority", "x", ":path", path}, extra...)
	}
	cases := []struct {
		name string
		run  func(t *testing.T, rc *rawClient) outcome
	}{
		// 6.5.2: invalid SETTINGS values.
		{"6.5.2 ENABLE_PUSH 2", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
			return goAway(http2.ErrCodeProtocol)
		}},
		{"6.5.2 MAX_FRAME_SIZE too small", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16383})
			return goAway(http2.ErrCodeProtocol)
		}},
		{"6.5.2 MAX_FRAME_SIZE too large", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
			return goAway(http2.ErrCodeProtocol)
		}},
		{"6.5.2 INITIAL_WINDOW_SIZE above 2^31-1", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
			return goAway(http2.ErrCodeFlowControl)
		}},
		{"6.9.2 INITIAL_WINDOW_SIZE overflows a stream window", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/block")...)
			_ = rc.fr.WriteWindowUpdate(1, 1<<31-1-65535)
			_ = rc.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65536})
			return goAway(http2.ErrCodeFlowControl)
		}},
		// 4.2: the server advertises its frame size limit and enforces it.
		{"4.2 DATA above the advertised max frame size", func(t *testing.T, rc *rawClient) outcome {
			var max uint32
			rc.until(t, "server SETTINGS", func(f http2.Frame) bool {
				sf, ok := f.(*http2.SettingsFrame)
				if ok && !sf.IsAck() {
					max, _ = sf.Value(http2.SettingMaxFrameSize)
					return true
				}
				return false
			})
			if max == 0 {
				t.Fatal("server SETTINGS has no SETTINGS_MAX_FRAME_SIZE: peers must assume 16384")
			}
			rc.headers(t, 1, false, req("POST", "/block")...)
			_ = rc.fr.WriteData(1, false, make([]byte, max+1))
			return goAway(http2.ErrCodeFrameSize)
		}},
		// 5.1: frames on idle streams are connection errors.
		{"5.1 DATA on idle stream", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteData(1, true, []byte("x"))
			return goAway(http2.ErrCodeProtocol)
		}},
		{"5.1 RST_STREAM on idle stream", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			return goAway(http2.ErrCodeProtocol)
		}},
		{"5.1 WINDOW_UPDATE on idle stream", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteWindowUpdate(1, 100)
			return goAway(http2.ErrCodeProtocol)
		}},
		// 5.1: frames on half-closed (remote) and closed streams.
		{"5.1 HEADERS on half-closed (remote) stream", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/block")...)
			rc.headers(t, 1, true, "x-trailer", "1")
			return rstStream(1, http2.ErrCodeStreamClosed)
		}},
		{"5.1 DATA after END_STREAM both ways", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/")...)
			rc.waitEnd(t, 1)
			_ = rc.fr.WriteData(1, true, []byte("x"))
			return rstStream(1, http2.ErrCodeStreamClosed)
		}},
		{"5.1 DATA after the client's RST_STREAM", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block")...)
			_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			_ = rc.fr.WriteData(1, true, []byte("x"))
			return rstStream(1, http2.ErrCodeStreamClosed)
		}},
		{"5.1 HEADERS after END_STREAM both ways", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/")...)
			rc.waitEnd(t, 1)
			rc.headers(t, 1, true, req("GET", "/")...)
			o := goAway(http2.ErrCodeProtocol)
			o.stream, o.orClosed = 1, true
			return o
		}},
		{"5.1 trailers after the client's RST_STREAM", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block")...)
			_ = rc.fr.WriteRSTStream(1, http2.ErrCodeCancel)
			rc.headers(t, 1, true, "x-trailer", "1")
			return rstStream(1, http2.ErrCodeStreamClosed)
		}},
		{"5.1 late frames on a stream the server reset are ignored", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block", "content-length", "1")...)
			_ = rc.fr.WriteData(1, false, []byte("ab"))
			rc.expect(t, rstStream(1, http2.ErrCodeProtocol))
			// In flight when the RST was sent: no answer, and the
			// connection keeps serving.
			_ = rc.fr.WriteData(1, false, []byte("c"))
			rc.headers(t, 1, true, "x-trailer", "1")
			rc.headers(t, 3, true, req("GET", "/")...)
			return respond(3, "200")
		}},
		{"5.1.1 HEADERS with a lower stream ID", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 5, true, req("GET", "/")...)
			rc.waitEnd(t, 5)
			rc.headers(t, 3, true, req("GET", "/")...)
			return goAway(http2.ErrCodeProtocol)
		}},
		// 5.3.1: a stream cannot depend on itself.
		{"5.3.1 HEADERS depending on itself", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WriteHeaders(http2.HeadersFrameParam{
				StreamID: 1, BlockFragment: rc.encode(req("GET", "/")...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 1, Weight: 15},
			})
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"5.3.1 PRIORITY depending on itself", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block")...)
			_ = rc.fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 15})
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		// 6.9.1: a stream window above 2^31-1.
		{"6.9.1 stream window overflow", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/block")...)
			_ = rc.fr.WriteWindowUpdate(1, 1<<31-1)
			return rstStream(1, http2.ErrCodeFlowControl)
		}},
		// 8.1.2: malformed requests are stream errors.
		{"8.1.2.3 missing :scheme", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, ":method", "GET", ":authority", "x", ":path", "/")
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.3.1 :method with a space", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET /admin", "/")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.3.1 :method with a separator", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("G(ET)", "/")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.3.1 :method not ASCII", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GÉT", "/")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.2 connection header", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/", "connection", "keep-alive")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.2 TE other than trailers", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("GET", "/", "te", "trailers, deflate")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.6 DATA shorter than content-length", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block", "content-length", "4")...)
			_ = rc.fr.WriteData(1, true, []byte("abc"))
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.6 DATA longer than content-length", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block", "content-length", "2")...)
			_ = rc.fr.WriteData(1, false, []byte("abc"))
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.6 trailers before content-length is reached", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block", "content-length", "4")...)
			_ = rc.fr.WriteData(1, false, []byte("abc"))
			rc.headers(t, 1, true, "x-trailer", "1")
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		{"8.1.2.6 content-length not a number", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/block", "content-length", "3x")...)
			return rstStream(1, http2.ErrCodeProtocol)
		}},
		// Guards: valid requests of the same shapes are still served.
		{"valid: TE trailers and matching content-length", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, false, req("POST", "/echo", "te", "trailers", "content-length", "3")...)
			_ = rc.fr.WriteData(1, true, []byte("abc"))
			return respond(1, "200")
		}},
		{"valid: an extension method (any token)", func(t *testing.T, rc *rawClient) outcome {
			rc.headers(t, 1, true, req("M-SEARCH", "/")...)
			return respond(1, "200")
		}},
		{"valid: PRIORITY on an idle stream", func(t *testing.T, rc *rawClient) outcome {
			_ = rc.fr.WritePriority(3, http2.PriorityParam{StreamDep: 1, Weight: 15})
			rc.headers(t, 1, true, req("GET", "/")...)
			return respond(1, "200")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := newRawClient(t, h, ServerOptions{})
			rc.expect(t, tc.run(t, rc))
		})
	}
}

// encode returns an HPACK block for fields (pairs).
func (rc *rawClient) encode(fields ...string) []byte {
	rc.hb.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = rc.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), rc.hb.Bytes()...)
}

// TestServerDeclaredLength: a handler cannot write more than the
// Content-Length it declared (as net/http: http.ErrContentLength), since
// the peer must reject such a response as malformed.
func TestServerDeclaredLength(t *testing.T) {
	cases := []struct {
		name    string
		declare string
		write   func(w http.ResponseWriter) error
		wantErr error
	}{
		{"Write over", "3", func(w http.ResponseWriter) error { _, err := w.Write([]byte("hello")); return err }, http.ErrContentLength},
		{"WriteString over", "3", func(w http.ResponseWriter) error { _, err := io.WriteString(w, "hello"); return err }, http.ErrContentLength},
		{"second Write over", "4", func(w http.ResponseWriter) error {
			if _, err := w.Write([]byte("abc")); err != nil {
				return err
			}
			_, err := w.Write([]byte("de"))
			return err
		}, http.ErrContentLength},
		{"exact", "3", func(w http.ResponseWriter) error { _, err := w.Write([]byte("abc")); return err }, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := make(chan error, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", tc.declare)
				got <- tc.write(w)
			})
			tt := newTestTLS(t)
			s := startServer(t, "lean", tt, h)
			c := dialClient(t, "xnet", tt, s.addr)
			req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
			if res, err := c.RoundTrip(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
			}
			select {
			case err := <-got:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("handler's write: %v, want %v", err, tc.wantErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("handler did not run")
			}
		})
	}
}
