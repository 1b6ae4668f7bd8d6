package meshh2

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frames builds a raw frame sequence with the Framer (seed corpus).
func frames(fn func(fr *http2.Framer, hdr func(fields ...string) []byte)) []byte {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	hdr := func(fields ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	fn(fr, hdr)
	return buf.Bytes()
}

var getFields = []string{":method", "GET", ":scheme", "https", ":authority", "x", ":path", "/"}

func fuzzSeeds() [][]byte {
	return [][]byte{
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(getFields...), EndStream: true, EndHeaders: true})
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(":method", "POST", ":scheme", "https", ":authority", "x", ":path", "/", "content-length", "3"), EndHeaders: true})
			_ = fr.WriteData(1, false, []byte("abc"))
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr("x-trailer", "1"), EndStream: true, EndHeaders: true})
			_ = fr.WriteWindowUpdate(0, 1000)
			_ = fr.WritePing(false, [8]byte{1})
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(getFields...), EndHeaders: false})
			_ = fr.WriteContinuation(3, true, hdr("x-a", "b"))
			_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
			_ = fr.WriteData(3, true, []byte("late"))
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: hdr(getFields...), EndStream: true, EndHeaders: true})
			_ = fr.WriteData(9, false, make([]byte, 100))
			_ = fr.WriteWindowUpdate(1, 1<<31-1)
			_ = fr.WriteWindowUpdate(0, 1<<31-1)
		}),
		// Conformance vectors (conformance_test.go): idle and closed
		// streams, self-dependency, content-length, connection-specific
		// fields, settings values.
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(":method", "POST", ":scheme", "https", ":path", "/", "content-length", "4"), EndHeaders: true})
			_ = fr.WriteData(1, true, []byte("abc"))
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(":method", "POST", ":scheme", "https", ":path", "/", "content-length", "1"), EndHeaders: true})
			_ = fr.WriteData(3, false, []byte("abc"))
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr("x-t", "1"), EndStream: true, EndHeaders: true})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(getFields...), EndStream: true, EndHeaders: true})
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: hdr(":method", "GET", ":path", "/", "connection", "x", "te", "gzip"), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 5, Weight: 1}})
			_ = fr.WritePriority(7, http2.PriorityParam{StreamDep: 7})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hdr(getFields...), EndStream: true, EndHeaders: true})
			_ = fr.WriteRSTStream(9, http2.ErrCodeCancel)
		}),
		frames(func(fr *http2.Framer, hdr func(...string) []byte) {
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
			_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(getFields...), EndStream: true, EndHeaders: true})
			_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
			_ = fr.WriteWindowUpdate(1, 1<<31-1)
		}),
		{0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
}

// FuzzServerFrames feeds arbitrary bytes after a valid preface and
// SETTINGS: the server must neither panic nor hang.
func FuzzServerFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
		w.Header().Set(http.TrailerPrefix+"X-T", "t")
	})
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sconn, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			sc := NewServerConn(sconn, ServerOptions{Handler: h, MaxConcurrentStreams: 8})
			done <- sc.Serve()
		}()
		// Drain the server's output so its writes never block.
		go func() { _, _ = io.Copy(io.Discard, c) }()
		var pre bytes.Buffer
		pre.WriteString(http2.ClientPreface)
		_ = http2.NewFramer(&pre, nil).WriteSettings()
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(pre.Bytes())
		_, _ = c.Write(in)
		_ = c.(*net.TCPConn).CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("server did not finish after the client closed")
		}
	})
}

// FuzzClientFrames feeds arbitrary server bytes, after the server's
// SETTINGS, to a lean client with a request in flight: the client must
// neither panic nor hang, and must end the request and the connection
// once the server closes.
func FuzzClientFrames(f *testing.F) {
	f.Add(frames(func(fr *http2.Framer, hdr func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(":status", "200", "content-length", "3"), EndHeaders: true})
		_ = fr.WriteData(1, true, []byte("abc"))
	}))
	f.Add(frames(func(fr *http2.Framer, hdr func(...string) []byte) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr(":status", "200", "content-length", "4"), EndHeaders: true})
		_ = fr.WriteData(1, false, []byte("abc"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr("x-t", "1"), EndStream: true, EndHeaders: true})
	}))
	f.Add(frames(func(fr *http2.Framer, hdr func(...string) []byte) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 2})
		_ = fr.WriteData(3, true, []byte("x"))
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: hdr(":status", "200"), EndStream: true, EndHeaders: true})
		_ = fr.WriteWindowUpdate(1, 1<<31-1)
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		cc, err := NewClientConn(nc, ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		// Drain the client's output so its writes never block.
		go func() { _, _ = io.Copy(io.Discard, sc) }()
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequest(http.MethodGet, "https://x/", nil)
			if res, err := cc.RoundTrip(req); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
			}
		}()
		var out bytes.Buffer
		_ = http2.NewFramer(&out, nil).WriteSettings()
		_ = sc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = sc.Write(out.Bytes())
		_, _ = sc.Write(in)
		_ = sc.(*net.TCPConn).CloseWrite()
		select {
		case <-cc.readDone:
		case <-time.After(10 * time.Second):
			t.Fatal("client did not finish after the server closed")
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("request did not end after the connection closed")
		}
	})
}
