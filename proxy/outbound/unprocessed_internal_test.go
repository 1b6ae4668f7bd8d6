package outbound

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

// fakeH2Server answers the first request stream of each connection with
// the given action and then ignores the connection.
func fakeH2Server(t *testing.T, act func(fr *http2.Framer, id uint32)) string {
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
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
					return
				}
				fr := http2.NewFramer(c, c)
				if fr.WriteSettings() != nil {
					return
				}
				for {
					f, err := fr.ReadFrame()
					if err != nil {
						return
					}
					switch f := f.(type) {
					case *http2.SettingsFrame:
						if !f.IsAck() {
							_ = fr.WriteSettingsAck()
						}
					case *http2.HeadersFrame:
						act(fr, f.StreamID)
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestIsUnprocessedClient pins what isUnprocessed recognises in errors of
// the pool's client (meshh2, on a plain conn as to an h2c endpoint) when a
// peer refuses a stream or goes away below it.
func TestIsUnprocessedClient(t *testing.T) {
	cases := []struct {
		name   string
		act    func(fr *http2.Framer, id uint32)
		want   bool
		goAway bool
	}{
		{"refused stream", func(fr *http2.Framer, id uint32) { _ = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream) }, true, false},
		{"graceful GOAWAY below the stream", func(fr *http2.Framer, id uint32) { _ = fr.WriteGoAway(id-1, http2.ErrCodeNo, nil) }, true, true},
		{"internal error", func(fr *http2.Framer, id uint32) { _ = fr.WriteRSTStream(id, http2.ErrCodeInternal) }, false, false},
		{"cancel", func(fr *http2.Framer, id uint32) { _ = fr.WriteRSTStream(id, http2.ErrCodeCancel) }, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := fakeH2Server(t, tc.act)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			cc, err := meshh2.NewClientConn(c, meshh2.ClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			req, _ := http.NewRequest(http.MethodGet, "http://peer/", nil)
			_, err = cc.RoundTrip(req)
			if err == nil {
				t.Fatal("round trip succeeded")
			}
			if got := isUnprocessed(err); got != tc.want {
				t.Fatalf("isUnprocessed(%q) = %v, want %v", err, got, tc.want)
			}
			if tc.goAway {
				// A request on the conn after its GOAWAY never leaves.
				req, _ := http.NewRequest(http.MethodGet, "http://peer/", nil)
				if _, err := cc.RoundTrip(req); err == nil || !isUnprocessed(err) {
					t.Fatalf("round trip after GOAWAY: isUnprocessed(%v) = false", err)
				}
			}
		})
	}
}

func TestIsUnprocessedOthers(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{meshh2.ErrUnprocessed, true},
		{errors.Join(errors.New("x"), meshh2.ErrUnprocessed), true},
		{&meshh2.StreamError{StreamID: 1, Code: http2.ErrCodeProtocol, Remote: true}, false},
		{meshh2.ErrClosed, false},
		{io.ErrUnexpectedEOF, false},
	} {
		if got := isUnprocessed(tc.err); got != tc.want {
			t.Errorf("isUnprocessed(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
