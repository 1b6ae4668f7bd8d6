package echo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/faults"
	"github.com/trellis-mesh/trellis/demoapp/upstream"
)

// startEcho runs Serve on a loopback port and checks, at cleanup, that it
// shuts down cleanly.
func startEcho(t *testing.T, failRate float64) string {
	t.Helper()
	inj, err := faults.New(failRate)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Config{Name: "echo-0", Faults: inj}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// clients returns an HTTP/1.1 and an h2c (prior knowledge) client.
func clients(t *testing.T) map[string]*http.Client {
	t.Helper()
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetUnencryptedHTTP2(true)
	c1 := &http.Client{Transport: &http.Transport{Protocols: &h1}, Timeout: 10 * time.Second}
	c2 := &http.Client{Transport: &http.Transport{Protocols: &h2}, Timeout: 10 * time.Second}
	t.Cleanup(c1.CloseIdleConnections)
	t.Cleanup(c2.CloseIdleConnections)
	return map[string]*http.Client{"HTTP/1.1": c1, "HTTP/2.0": c2}
}

// trailerBody sets the request's trailers when its content is exhausted,
// as a streaming client would.
type trailerBody struct {
	r     io.Reader
	onEOF func()
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) && b.onEOF != nil {
		b.onEOF()
		b.onEOF = nil
	}
	return n, err
}

func TestEchoRoundTrip(t *testing.T) {
	addr := startEcho(t, 0)
	sizes := map[string]int{
		"small":     2,                                     // fits the server's write buffer: trailers must still come back
		"buffered":  10000,                                 // several frames and chunks, read whole first
		"streaming": 2*maxBufferedEcho/len("trellis-") + 1, // echoed while it arrives
	}
	for proto, client := range clients(t) {
		for sizeName, n := range sizes {
			payload := strings.Repeat("trellis-", n)
			t.Run(proto+"/"+sizeName, func(t *testing.T) {
				req, err := http.NewRequest(http.MethodPut, "http://"+addr+"/echo", nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("X-Custom", "one")
				req.Header.Add("X-Multi", "a")
				req.Header.Add("X-Multi", "b")
				req.Header.Set("Content-Type", "text/x-test")
				req.Trailer = http.Header{"X-Checksum": nil}
				req.Body = io.NopCloser(&trailerBody{r: strings.NewReader(payload), onEOF: func() {
					req.Trailer.Set("X-Checksum", "c0ffee")
				}})
				req.ContentLength = -1
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != 200 || resp.Proto != proto {
					t.Fatalf("status %d proto %s, want 200 %s", resp.StatusCode, resp.Proto, proto)
				}
				if string(body) != payload {
					t.Errorf("body: got %d bytes, want %d", len(body), len(payload))
				}
				checks := map[string]string{
					"X-Echo-X-Custom":     "one",
					"X-Echo-Content-Type": "text/x-test",
					"Content-Type":        "text/x-test",
					"Echo-Method":         "PUT",
					"Echo-Proto":          proto,
					"Echo-Host":           addr,
					"Echo-Served-By":      "echo-0",
				}
				for k, want := range checks {
					if got := resp.Header.Get(k); got != want {
						t.Errorf("header %s = %q, want %q", k, got, want)
					}
				}
				if got := resp.Header.Values("X-Echo-X-Multi"); strings.Join(got, ",") != "a,b" {
					t.Errorf("X-Echo-X-Multi = %q, want [a b]", got)
				}
				if got := resp.Trailer.Get("X-Checksum"); got != "c0ffee" {
					t.Errorf("trailer X-Checksum = %q, want c0ffee (trailers %v)", got, resp.Trailer)
				}
			})
		}
	}
}

func TestEndpoints(t *testing.T) {
	addr := startEcho(t, 0)
	tests := []struct {
		path     string
		wantCode int
		check    func(t *testing.T, body string)
	}{
		{"/", 200, func(t *testing.T, body string) {
			if len(body) != RootBodySize {
				t.Errorf("body length %d, want %d", len(body), RootBodySize)
			}
		}},
		{"/healthz", 200, nil},
		{"/status/418", 418, nil},
		{"/status/503", 503, nil},
		{"/status/204", 204, nil},
		{"/status/99", 400, nil},
		{"/status/600", 400, nil},
		{"/status/abc", 400, nil},
		{"/slow?ms=5", 200, func(t *testing.T, body string) {
			if body != "slept 5 ms\n" {
				t.Errorf("body %q", body)
			}
		}},
		{"/slow?ms=-1", 400, nil},
		{"/slow?ms=99999999", 400, nil},
		{"/stream?chunks=5&ms=1", 200, func(t *testing.T, body string) {
			if n := strings.Count(body, "chunk "); n != 5 {
				t.Errorf("%d chunks, want 5: %q", n, body)
			}
		}},
		{"/stream?chunks=x", 400, nil},
		{"/stream?chunks=1&ms=%zz", 400, nil},
		{"/missing", 404, nil},
	}
	for proto, client := range clients(t) {
		for _, tt := range tests {
			t.Run(proto+tt.path, func(t *testing.T) {
				resp, err := client.Get("http://" + addr + tt.path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.wantCode {
					t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantCode, body)
				}
				if tt.check != nil {
					tt.check(t, string(body))
				}
			})
		}
	}
}

// TestStreamFlushes reads the first chunk while the server still waits to
// send the second: only a flushed response makes that possible.
func TestStreamFlushes(t *testing.T) {
	addr := startEcho(t, 0)
	for proto, client := range clients(t) {
		t.Run(proto, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stream?chunks=2&ms=10000", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			line, err := bufio.NewReader(resp.Body).ReadString('\n')
			if err != nil || line != "chunk 0\n" {
				t.Fatalf("first line %q, %v", line, err)
			}
			cancel() // the server notices and stops the stream
		})
	}
}

func TestHTTPFailRate(t *testing.T) {
	tests := []struct {
		rate       float64
		wantFailed int
	}{{0, 0}, {1, 20}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.rate), func(t *testing.T) {
			addr := startEcho(t, tt.rate)
			client := clients(t)["HTTP/1.1"]
			failed := 0
			for i := 0; i < 20; i++ {
				resp, err := client.Get("http://" + addr + "/")
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 500 {
					failed++
				}
			}
			if failed != tt.wantFailed {
				t.Errorf("%d of 20 failed, want %d", failed, tt.wantFailed)
			}
			// Health checks are never failed on purpose.
			resp, err := client.Get("http://" + addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("/healthz status %d", resp.StatusCode)
			}
		})
	}
}

// TestExplicitProxyHTTP checks the mesh's explicit mode from the client
// side: the connection goes to the proxy address, the logical authority
// travels in Host.
func TestExplicitProxyHTTP(t *testing.T) {
	addr := startEcho(t, 0)
	client := upstream.NewHTTPClient(addr, 10*time.Second, 0)
	defer client.Close()
	req, err := upstream.NewRequest(context.Background(), http.MethodGet, "books.demo:80", "/echo")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Echo-Host"); got != "books.demo:80" {
		t.Errorf("Host seen by the server = %q, want books.demo:80", got)
	}
	if got := resp.Header.Get("Echo-Proto"); got != "HTTP/1.1" {
		t.Errorf("proto = %q, want HTTP/1.1", got)
	}
}

// TestShutdownIsGraceful stops the server while a response is half sent:
// the response must still complete and Serve must return nil.
func TestShutdownIsGraceful(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Config{}) }()
	client := clients(t)["HTTP/1.1"]
	resp, err := client.Get("http://" + ln.Addr().String() + "/stream?chunks=3&ms=200")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != "chunk 0\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	cancel() // the request is in flight: we have read part of its response
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "chunk 1\nchunk 2\n" {
		t.Errorf("rest of the in-flight response: %q, %v", rest, err)
	}
	if err := <-done; err != nil {
		t.Errorf("Serve: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("server still accepts connections after shutdown")
	}
}
