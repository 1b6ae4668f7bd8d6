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

// TestWriteResponseTrailersOfLengthedH2 writes an HTTP/2 upstream response
// that has both a length and declared trailers (what an h2c app's Go server
// sends for a small body) to an HTTP/1.1 client: the trailers must arrive,
// so the body goes chunked instead of with the length.
func TestWriteResponseTrailersOfLengthedH2(t *testing.T) {
	body := []byte("small body")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		tr := http.Header{"X-Trl": nil}
		up := &http.Response{
			StatusCode:    http.StatusOK,
			ProtoMajor:    2,
			Header:        http.Header{"Trailer": {"X-Trl"}, "Content-Length": {"10"}},
			Trailer:       tr,
			ContentLength: int64(len(body)),
			Body:          &trailerBody{r: bytes.NewReader(body), at: func() { tr["X-Trl"] = []string{"v1"} }},
		}
		if _, err := WriteResponse(w, up); err != nil {
			t.Errorf("WriteResponse: %v", err)
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, body) || resp.Trailer.Get("X-Trl") != "v1" {
		t.Errorf("body %q trailers %v; want %q and X-Trl: v1", got, resp.Trailer, body)
	}
}

// trailerBody fills the trailers when the body ends, as HTTP/2 clients do.
type trailerBody struct {
	r  io.Reader
	at func()
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.at()
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }
