package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTPTarget describes HTTP/1.1 GET requests sent over a fixed pool of
// keep-alive connections, one request in flight per connection.
type HTTPTarget struct {
	Addr    string        // host:port to dial
	Host    string        // Host header; Addr when empty
	Path    string        // request path; "/" when empty
	Timeout time.Duration // per request; default 5s
	// Body, when set, makes the request a POST with this body (sent with
	// one writev together with the head).
	Body []byte
	// Close sends "Connection: close": every request then opens a new
	// connection (connection churn).
	Close bool
}

// HTTPWorkers returns n workers, each owning one connection dialled lazily
// and redialled after an error or a "Connection: close". The client is a
// few lines over net.Conn with a request pre-encoded once, to keep the load
// generator's own CPU low on a small machine. Close the returned closer
// after the runs to close the connections.
func HTTPWorkers(t HTTPTarget, n int) ([]Worker, io.Closer) {
	host := t.Host
	if host == "" {
		host = t.Addr
	}
	path := t.Path
	if path == "" {
		path = "/"
	}
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	req := encodeRequest(host, path, t.Body, t.Close)
	bufSize := 4096
	if len(t.Body) > 0 {
		bufSize = 64 << 10 // large bodies: fewer reads
	}
	conns := make([]*httpConn, n)
	workers := make([]Worker, n)
	for i := range conns {
		c := &httpConn{addr: t.Addr, req: req, body: t.Body, timeout: timeout, buf: make([]byte, bufSize)}
		conns[i] = c
		workers[i] = c.do
	}
	return workers, closers(conns)
}

// encodeRequest encodes the request head once for every request.
func encodeRequest(host, path string, body []byte, closeConn bool) []byte {
	method, extra := "GET", ""
	if body != nil {
		method, extra = "POST", "Content-Length: "+strconv.Itoa(len(body))+"\r\n"
	}
	if closeConn {
		extra += "Connection: close\r\n"
	}
	return []byte(method + " " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: meshbench\r\n" + extra + "\r\n")
}

type closers []*httpConn

func (cs closers) Close() error {
	for _, c := range cs {
		c.close()
	}
	return nil
}

// lazyConn is a worker's connection: dialled when first needed, and again
// after it was closed.
type lazyConn struct {
	conn net.Conn
	br   *bufio.Reader
}

func (c *lazyConn) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

func (c *lazyConn) dial(ctx context.Context, addr string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	c.conn = conn
	if c.br == nil {
		c.br = bufio.NewReaderSize(conn, 4096)
	} else {
		c.br.Reset(conn)
	}
	return nil
}

type httpConn struct {
	lazyConn
	addr    string
	req     []byte
	body    []byte
	timeout time.Duration
	buf     []byte
}

func (c *httpConn) do(ctx context.Context) error {
	if c.conn == nil {
		if err := c.dial(ctx, c.addr, c.timeout); err != nil {
			return err
		}
	}
	keep, err := c.roundTrip()
	if err != nil || !keep {
		c.close()
	}
	return err
}

// roundTrip sends one request and reads the whole response; keep is false
// when the server asked to close the connection.
func (c *httpConn) roundTrip() (keep bool, err error) {
	if err := c.conn.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		return false, err
	}
	bufs := net.Buffers{c.req}
	if len(c.body) > 0 {
		bufs = append(bufs, c.body)
	}
	if _, err := bufs.WriteTo(c.conn); err != nil {
		return false, fmt.Errorf("write request: %w", err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return false, fmt.Errorf("read response: %w", err)
	}
	_, err = io.CopyBuffer(discard{}, resp.Body, c.buf)
	_ = resp.Body.Close()
	if err != nil {
		return false, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return !resp.Close, fmt.Errorf("status %d", resp.StatusCode)
	}
	return !resp.Close, nil
}

// discard is io.Discard without ReaderFrom, so CopyBuffer uses our buffer.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
