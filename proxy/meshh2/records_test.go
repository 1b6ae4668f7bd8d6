package meshh2

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordConn counts the TLS records written through it by parsing the
// record headers in the byte stream (type, version, 16-bit length), so the
// count does not depend on how crypto/tls batches its socket writes.
type recordConn struct {
	net.Conn
	mu      sync.Mutex
	pending []byte // header bytes of a record split across writes
	left    int    // payload bytes of the current record still to come
	records int
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.count(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recordConn) count(p []byte) {
	for len(p) > 0 {
		if c.left > 0 {
			n := min(c.left, len(p))
			c.left -= n
			p = p[n:]
			continue
		}
		need := 5 - len(c.pending)
		n := min(need, len(p))
		c.pending = append(c.pending, p[:n]...)
		p = p[n:]
		if len(c.pending) == 5 {
			c.left = int(c.pending[3])<<8 | int(c.pending[4])
			c.pending = c.pending[:0]
			c.records++
		}
	}
}

func (c *recordConn) take() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.records
	c.records = 0
	return n
}

// recordPair is a lean client and server over real TLS on loopback, with
// the TLS records each side writes counted below crypto/tls.
type recordPair struct {
	cc         *ClientConn
	clientRecs *recordConn
	serverRecs *recordConn
}

func newRecordPair(t *testing.T, h http.Handler) *recordPair {
	t.Helper()
	p := &recordPair{}
	var mu sync.Mutex // the server side is wrapped in its own goroutine
	p.cc = leanPair(t, h, ServerOptions{}, func(server bool, c net.Conn) net.Conn {
		rc := &recordConn{Conn: c}
		mu.Lock()
		defer mu.Unlock()
		if server {
			p.serverRecs = rc
		} else {
			p.clientRecs = rc
		}
		return rc
	})
	mu.Lock()
	defer mu.Unlock()
	if p.serverRecs == nil {
		t.Fatal("server conn not wrapped")
	}
	return p
}

func (p *recordPair) do(t *testing.T, method, path, body string) (string, http.Header) {
	t.Helper()
	var rb io.Reader
	if body != "" {
		rb = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "https://mesh.test"+path, rb)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.cc.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(got), res.Trailer
}

// TestSmallExchangeIsOneRecordEachWay: a small request (headers, or
// headers and body) is one TLS record from the client, and a small
// response (headers, body, END_STREAM, even trailers) is one record from
// the server: HEADERS, DATA and trailers are coalesced into one flush.
func TestSmallExchangeIsOneRecordEachWay(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/trailers" {
			w.Header().Set("Trailer", "Grpc-Status")
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":1,"title":"The Left Hand of Darkness"}` + string(b)))
		if r.URL.Path == "/trailers" {
			w.Header().Set("Grpc-Status", "0")
		}
	})
	cases := []struct {
		name, method, path, body string
	}{
		{"GET", http.MethodGet, "/books/1", ""},
		{"POST small body", http.MethodPost, "/books", `{"title":"Dune"}`},
		{"response trailers", http.MethodPost, "/trailers", `{"q":1}`},
	}
	const n = 20
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newRecordPair(t, h)
			// The first exchange also carries the SETTINGS acks.
			p.do(t, tc.method, tc.path, tc.body)
			p.clientRecs.take()
			p.serverRecs.take()
			for range n {
				got, tr := p.do(t, tc.method, tc.path, tc.body)
				if !strings.HasPrefix(got, `{"id":1`) || !strings.HasSuffix(got, tc.body) {
					t.Fatalf("response body %q", got)
				}
				if tc.path == "/trailers" && tr.Get("Grpc-Status") != "0" {
					t.Fatalf("trailers %v, want Grpc-Status: 0", tr)
				}
			}
			// The server's records are written before the client can read
			// the response, so both counts are complete here.
			if c, s := p.clientRecs.take(), p.serverRecs.take(); c != n || s != n {
				t.Errorf("%d exchanges: %d client and %d server TLS records, want %d each", n, c, s, n)
			}
		})
	}
}

// heldBody is a request body of unknown length, as a proxy forwards one,
// that cannot tell whether a Read would wait; bufferedHeldBody can
// (Buffered: all of it is there).
type heldBody struct {
	r *strings.Reader
}

func (b *heldBody) Read(p []byte) (int, error) { return b.r.Read(p) }
func (b *heldBody) Close() error               { return nil }

type bufferedHeldBody struct{ *heldBody }

func (b bufferedHeldBody) Buffered() (int, bool) { return b.r.Len(), true }

// TestWholeProxiedBodyIsOneRecord: a request body of unknown length (a
// gRPC message being proxied) that has wholly arrived goes out with the
// request's HEADERS and END_STREAM in one TLS record; one that cannot say
// so is streamed: HEADERS, then DATA, then END_STREAM.
func TestWholeProxiedBodyIsOneRecord(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})
	const n = 20
	for _, buffered := range []bool{true, false} {
		p := newRecordPair(t, h)
		send := func() {
			hb := &heldBody{r: strings.NewReader(`{"grpc":"message"}`)}
			var body io.ReadCloser = hb
			if buffered {
				body = bufferedHeldBody{hb}
			}
			req, err := http.NewRequest(http.MethodPost, "https://mesh.test/svc/Method", body)
			if err != nil {
				t.Fatal(err)
			}
			req.ContentLength = -1
			res, err := p.cc.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(res.Body)
			_ = res.Body.Close()
			if err != nil || string(got) != `{"grpc":"message"}` {
				t.Fatalf("echo %q, %v", got, err)
			}
		}
		send()
		p.clientRecs.take()
		for range n {
			send()
		}
		c := p.clientRecs.take()
		switch {
		case buffered && c != n:
			t.Errorf("a body wholly there: %d records for %d requests, want %d", c, n, n)
		case !buffered && c < 2*n:
			t.Errorf("a body that cannot tell: %d records for %d requests, want it streamed (at least %d)", c, n, 2*n)
		}
		t.Logf("buffered=%v: %d client records for %d requests", buffered, c, n)
	}
}

// waitingBody is a body whose bytes are not there yet, and says so.
type waitingBody struct{ *io.PipeReader }

func (waitingBody) Buffered() (int, bool) { return 0, false }

// TestWaitingBodyHeadersGoFirst: a body that would wait is not waited for:
// the request's HEADERS leave at once (a gRPC client stream that waits for
// the server's headers before it sends would otherwise never start).
func TestWaitingBodyHeadersGoFirst(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		w.(http.Flusher).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				_, _ = w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	})
	p := newRecordPair(t, h)
	pr, pw := io.Pipe()
	defer pw.Close()
	req, err := http.NewRequest(http.MethodPost, "https://mesh.test/stream", waitingBody{pr})
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = -1
	// RoundTrip returns only once the server got the headers.
	var res *http.Response
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err = p.cc.RoundTrip(req)
	}()
	within(t, 10*time.Second, "the response to headers sent without a body", done)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("status %d", res.StatusCode)
	}
	if _, err := io.WriteString(pw, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}
