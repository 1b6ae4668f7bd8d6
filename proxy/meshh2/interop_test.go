package meshh2

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newReq(t testing.TB, ctx context.Context, method, addr, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "https://"+addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// data returns n deterministic pseudo-random bytes.
func data(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestBasicExchanges(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/get":
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Host", r.Host)
			w.Header().Set("X-Query", r.URL.RawQuery)
			w.Header().Set("X-Cookie", r.Header.Get("Cookie"))
			_, _ = io.WriteString(w, "hello "+r.Header.Get("X-Name"))
		case "/echo":
			b, err := io.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("X-Len", strconv.FormatInt(r.ContentLength, 10))
			_, _ = w.Write(b)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/big":
			n, _ := strconv.Atoi(r.URL.Query().Get("n"))
			req := sha256.New()
			got, err := io.Copy(req, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			w.Header().Set("Trailer", "X-Req-Sha, X-Req-Len")
			_, _ = w.Write(data(2, n))
			w.Header().Set("X-Req-Sha", hex.EncodeToString(req.Sum(nil)))
			w.Header().Set("X-Req-Len", strconv.FormatInt(got, 10))
		}
	})
	big := data(1, 10<<20)
	cases := []struct {
		name, method, path string
		body               []byte
		unknownLen         bool
		check              func(t *testing.T, resp *http.Response, body []byte)
	}{
		{"GET", "GET", "/get?q=1", nil, false, func(t *testing.T, resp *http.Response, body []byte) {
			if resp.StatusCode != 200 || string(body) != "hello trellis" || resp.Header.Get("X-Method") != "GET" ||
				resp.Header.Get("X-Query") != "q=1" || resp.Header.Get("X-Cookie") != "a=1; b=2" {
				t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
			}
			if !strings.HasPrefix(resp.Header.Get("X-Host"), "127.0.0.1:") {
				t.Fatalf("host %q", resp.Header.Get("X-Host"))
			}
		}},
		{"POST small", "POST", "/echo", []byte("ping body"), false, func(t *testing.T, resp *http.Response, body []byte) {
			if string(body) != "ping body" || resp.Header.Get("X-Len") != "9" {
				t.Fatalf("got %q %v", body, resp.Header)
			}
		}},
		{"POST unknown length", "POST", "/echo", bytes.Repeat([]byte("x"), 70000), true, func(t *testing.T, resp *http.Response, body []byte) {
			if len(body) != 70000 || resp.Header.Get("X-Len") != "-1" {
				t.Fatalf("got %d bytes, %v", len(body), resp.Header)
			}
		}},
		{"204", "GET", "/empty", nil, false, func(t *testing.T, resp *http.Response, body []byte) {
			if resp.StatusCode != 204 || len(body) != 0 {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
		}},
		{"10MiB both ways", "PUT", "/big?n=" + strconv.Itoa(10<<20), big, false, func(t *testing.T, resp *http.Response, body []byte) {
			if sum(body) != sum(data(2, 10<<20)) {
				t.Fatalf("response body corrupted (%d bytes)", len(body))
			}
			if resp.Trailer.Get("X-Req-Sha") != sum(big) || resp.Trailer.Get("X-Req-Len") != strconv.Itoa(len(big)) {
				t.Fatalf("request body corrupted: trailer %v", resp.Trailer)
			}
		}},
	}
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				var body io.Reader
				if tc.body != nil {
					body = bytes.NewReader(tc.body)
					if tc.unknownLen {
						body = io.MultiReader(body)
					}
				}
				req := newReq(t, context.Background(), tc.method, s.addr, tc.path, body)
				req.Header.Set("X-Name", "trellis")
				req.Header.Add("Cookie", "a=1")
				req.Header.Add("Cookie", "b=2")
				resp, err := c.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, resp, b)
			})
		}
	})
}

func TestTrailersBothWays(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "X-Declared")
		w.WriteHeader(200)
		_, _ = w.Write(b)
		w.Header().Set("X-Declared", "d:"+r.Trailer.Get("X-Req-Trailer"))
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
	// The request trailer's value is known once the body is read to EOF,
	// as with a proxied body (x/net's and net/http's servers fill
	// Request.Trailer then): with a declared length too, the client must
	// read past the last byte before it sends the trailers.
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprintf("declared-length=%v", declared), func(t *testing.T) {
			forPairs(t, h, func(t *testing.T, c client, s *server) { testRequestTrailers(t, c, s, declared) })
		})
	}
}

// trailerAtEOF is a body whose trailer is set when it returns io.EOF.
type trailerAtEOF struct {
	r   io.Reader
	set func()
}

func (b *trailerAtEOF) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.set != nil {
		b.set()
		b.set = nil
	}
	return n, err
}

func testRequestTrailers(t *testing.T, c client, s *server, declared bool) {
	body := &trailerAtEOF{r: strings.NewReader("payload")}
	req := newReq(t, context.Background(), "POST", s.addr, "/t", io.NopCloser(body))
	req.Trailer = http.Header{"X-Req-Trailer": nil}
	body.set = func() { req.Trailer.Set("X-Req-Trailer", "rt") }
	req.ContentLength = -1
	if declared {
		req.ContentLength = int64(len("payload"))
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "payload" {
		t.Fatalf("body %q", b)
	}
	if got := resp.Trailer.Get("X-Declared"); got != "d:rt" {
		t.Fatalf("declared trailer %q (trailers %v)", got, resp.Trailer)
	}
	if got := resp.Trailer.Get("Grpc-Status"); got != "0" {
		t.Fatalf("grpc-status trailer %q (trailers %v)", got, resp.Trailer)
	}
}

// TestBidiStreaming interleaves request and response messages on one
// stream, gRPC style: each message must come back before the next is sent.
func TestBidiStreaming(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		rc := http.NewResponseController(w)
		if err := rc.Flush(); err != nil {
			return
		}
		buf := make([]byte, 5)
		for {
			if _, err := io.ReadFull(r.Body, buf); err != nil {
				break
			}
			msg := make([]byte, binary.BigEndian.Uint32(buf[1:]))
			if _, err := io.ReadFull(r.Body, msg); err != nil {
				break
			}
			_, _ = w.Write(buf)
			_, _ = w.Write(bytes.ToUpper(msg))
			if err := rc.Flush(); err != nil {
				return
			}
		}
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		pr, pw := io.Pipe()
		req := newReq(t, context.Background(), "POST", s.addr, "/pkg.Svc/Bidi", pr)
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := c.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		for i := range 50 {
			msg := []byte(fmt.Sprintf("message %d", i))
			frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
			if _, err := pw.Write(frame); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(frame))
			if _, err := io.ReadFull(resp.Body, got); err != nil {
				t.Fatal(err)
			}
			if want := bytes.ToUpper(msg); !bytes.Equal(got[5:], want) {
				t.Fatalf("message %d: got %q want %q", i, got[5:], want)
			}
		}
		_ = pw.Close()
		if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
			t.Fatalf("tail %q %v", rest, err)
		}
		if resp.Trailer.Get("Grpc-Status") != "0" {
			t.Fatalf("trailers %v", resp.Trailer)
		}
	})
}

func TestCancellationReachesServer(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]chan struct{}{}
	ch := func(k string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if seen[k] == nil {
			seen[k] = make(chan struct{})
		}
		return seen[k]
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("X-Id")
		if r.URL.Path == "/after-headers" {
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
		}
		close(ch(id + "-started"))
		<-r.Context().Done()
		close(ch(id + "-done"))
	})
	n := 0
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		for _, path := range []string{"/before-headers", "/after-headers"} {
			n++
			id := strconv.Itoa(n)
			ctx, cancel := context.WithCancel(context.Background())
			req := newReq(t, ctx, "GET", s.addr, path, nil)
			req.Header.Set("X-Id", id)
			errc := make(chan error, 1)
			go func() {
				resp, err := c.RoundTrip(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
				}
				errc <- err
			}()
			within(t, 5*time.Second, "handler start", ch(id+"-started"))
			cancel()
			within(t, 5*time.Second, "server-side cancellation "+path, ch(id+"-done"))
			if err := <-errc; err == nil {
				t.Fatalf("%s: cancelled request succeeded", path)
			}
		}
	})
}

func TestServerReset(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/mid-body" {
			_, _ = w.Write([]byte("partial"))
			http.NewResponseController(w).Flush()
		}
		panic(http.ErrAbortHandler)
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/before", nil))
		if err == nil {
			resp.Body.Close()
			t.Fatal("aborted response succeeded")
		}
		resp, err = c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/mid-body", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Fatal("body of a reset stream read without error")
		}
		// The connection stays usable.
		resp, err = c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/mid-body", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	})
}

// TestGoAwayInFlight: a graceful shutdown lets the in-flight stream finish
// and refuses new ones.
func TestGoAwayInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			<-release
		}
		_, _ = io.WriteString(w, "done")
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		release = make(chan struct{})
		type result struct {
			body string
			err  error
		}
		resc := make(chan result, 1)
		go func() {
			resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/slow", nil))
			if err != nil {
				resc <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			resc <- result{string(b), err}
		}()
		<-started
		shut := make(chan struct{})
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s.shutdown(ctx)
			close(shut)
		}()
		// Wait until the client has seen the GOAWAY: new requests fail.
		deadline := time.Now().Add(5 * time.Second)
		for {
			resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/fast", nil))
			if err != nil {
				// The lean client says the request was never processed, so
				// a caller may retry it elsewhere.
				if _, lean := c.(*ClientConn); lean && !errors.Is(err, ErrUnprocessed) {
					t.Fatalf("request refused after GOAWAY: %v, want ErrUnprocessed", err)
				}
				break
			}
			resp.Body.Close()
			if time.Now().After(deadline) {
				t.Fatal("requests still accepted after GOAWAY")
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(release)
		r := <-resc
		if r.err != nil || r.body != "done" {
			t.Fatalf("in-flight request: %q %v", r.body, r.err)
		}
		within(t, 10*time.Second, "shutdown", shut)
	})
}

func TestManyConcurrentStreams(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
		_, _ = io.WriteString(w, r.URL.Query().Get("i"))
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		// One request first: the x/net client allows only 100 streams
		// until it has read the server's SETTINGS.
		resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/c?i=warm", nil))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		var wg sync.WaitGroup
		errs := make(chan error, 400)
		for i := range 400 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := strings.Repeat("b", i*37)
				req := newReq(t, context.Background(), "POST", s.addr, "/c?i="+strconv.Itoa(i), strings.NewReader(body))
				resp, err := c.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					errs <- err
					return
				}
				if string(b) != body+strconv.Itoa(i) {
					errs <- fmt.Errorf("request %d: wrong body (%d bytes)", i, len(b))
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// TestSlowReader: a stream whose body nobody reads fills only its own
// window; other streams on the connection keep flowing, and the slow body
// is complete once read.
func TestSlowReader(t *testing.T) {
	const n = 8 << 20
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(data(3, n))
	})
	forPairs(t, h, func(t *testing.T, c client, s *server) {
		slow, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/slow", nil))
		if err != nil {
			t.Fatal(err)
		}
		defer slow.Body.Close()
		// Several full transfers while the slow one is stalled.
		for range 3 {
			resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/fast", nil))
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || len(b) != n {
				t.Fatalf("fast stream: %d bytes, %v", len(b), err)
			}
		}
		// Now the slow reader drains in small pieces.
		var got bytes.Buffer
		buf := make([]byte, 1000)
		for {
			k, err := slow.Body.Read(buf)
			got.Write(buf[:k])
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if sum(got.Bytes()) != sum(data(3, n)) {
			t.Fatalf("slow body corrupted (%d bytes)", got.Len())
		}
	})
}

// TestLeanReceiveBuffersBounded: an unread lean response body buffers at
// most the stream window.
func TestLeanReceiveBuffersBounded(t *testing.T) {
	wrote := make(chan int64, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var total int64
		chunk := make([]byte, 32<<10)
		for total < 64<<20 {
			k, err := w.Write(chunk)
			total += int64(k)
			if err != nil {
				break
			}
		}
		wrote <- total
	})
	tt := newTestTLS(t)
	s := startServer(t, "xnet", tt, h)
	c := dialClient(t, "lean", tt, s.addr).(*ClientConn)
	resp, err := c.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	body := resp.Body.(*clientBody)
	// Wait until the server is blocked on our window: the buffered amount
	// stops growing at the window size.
	deadline := time.Now().Add(5 * time.Second)
	for {
		body.cs.in.mu.Lock()
		buffered := body.cs.in.buf.Len()
		body.cs.in.mu.Unlock()
		if buffered > StreamWindow {
			t.Fatalf("buffered %d bytes, more than the %d stream window", buffered, StreamWindow)
		}
		if buffered == StreamWindow {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("buffered %d bytes, never reached the window", buffered)
		}
		time.Sleep(time.Millisecond)
	}
	_ = resp.Body.Close()
	select {
	case total := <-wrote:
		if total >= 64<<20 {
			t.Fatalf("server wrote everything (%d bytes) into an unread stream", total)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server handler did not end after the body was closed")
	}
}

// TestLeanClientIdleClose: a lean client conn without streams closes after
// its idle timeout (so the pool redials instead of keeping dead peers).
func TestLeanClientIdleClose(t *testing.T) {
	tt := newTestTLS(t)
	s := startServer(t, "lean", tt, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	nc, err := tlsDial(tt, s.addr)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := NewClientConn(nc, ClientOptions{IdleTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := cc.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for cc.CanTakeNewRequest() {
		if time.Now().After(deadline) {
			t.Fatal("idle connection still open")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, err = cc.RoundTrip(newReq(t, context.Background(), "GET", s.addr, "/", nil))
	if !errors.Is(err, ErrUnprocessed) {
		t.Fatalf("request on an idle-closed conn: %v, want ErrUnprocessed", err)
	}
}
