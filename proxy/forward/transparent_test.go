//lint:file-ignore SA1019 x/net/http2 ServeConn is what the proxy's listeners use.

package forward

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"

	"golang.org/x/net/http2"
)

// TestWriteResponseAddsNothing writes an upstream response without Date
// and Content-Type through the servers the proxy uses (net/http's HTTP/1.1
// and x/net's HTTP/2) and checks the client gets none: a Go server adds
// both unless told not to.
func TestWriteResponseAddsNothing(t *testing.T) {
	body := []byte("<html><body>looks like HTML</body></html>")
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		up := &http.Response{
			StatusCode:    http.StatusOK,
			ProtoMajor:    1,
			Header:        http.Header{"X-App": {"a", "b"}},
			ContentLength: int64(len(body)),
			Body:          io.NopCloser(bytes.NewReader(body)),
		}
		if _, err := WriteResponse(w, up); err != nil {
			t.Errorf("WriteResponse: %v", err)
		}
	})
	for _, proto := range []string{"http1", "h2c"} {
		t.Run(proto, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var p http.Protocols
			if proto == "h2c" {
				go func() {
					h2 := &http2.Server{}
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						go h2.ServeConn(c, &http2.ServeConnOpts{Handler: handler})
					}
				}()
				p.SetUnencryptedHTTP2(true)
			} else {
				srv := &http.Server{Handler: handler}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
				p.SetHTTP1(true)
			}
			c := &http.Client{Transport: &http.Transport{Protocols: &p, DisableCompression: true}}
			defer c.CloseIdleConnections()
			resp, err := c.Get("http://" + ln.Addr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, k := range []string{"Date", "Content-Type"} {
				if v, ok := resp.Header[k]; ok {
					t.Errorf("%s added: %q", k, v)
				}
			}
			if v := resp.Header["X-App"]; len(v) != 2 || v[0] != "a" || v[1] != "b" {
				t.Errorf("X-App = %q", v)
			}
			if !bytes.Equal(got, body) {
				t.Errorf("body %q", got)
			}
		})
	}
}

func TestKeepRequestAbsent(t *testing.T) {
	h := http.Header{}
	KeepRequestAbsent(h)
	if v, ok := h["User-Agent"]; !ok || v != nil {
		t.Errorf("absent User-Agent: %q, present %v; want present and nil", v, ok)
	}
	h = http.Header{"User-Agent": {"app/1"}}
	KeepRequestAbsent(h)
	if v := h["User-Agent"]; len(v) != 1 || v[0] != "app/1" {
		t.Errorf("User-Agent changed to %q", v)
	}
}
