package outbound

import (
	"errors"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"

	"github.com/trellis-mesh/trellis/proxy/internal/h2fake"
	"github.com/trellis-mesh/trellis/proxy/meshh2"
)

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
			addr := h2fake.Serve(t, tc.act)
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
