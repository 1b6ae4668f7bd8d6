package loadgen

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// StreamTarget describes exchanges over raw TCP (opaque to a proxy): each
// request writes a 4-byte big-endian length and that many bytes, then reads
// that many bytes back (the upstream's "sink then send" protocol, see
// ServeStream). Nothing in the bytes is HTTP, so a proxy can only splice.
type StreamTarget struct {
	Addr string // host:port to dial
	// Connect, when set, opens each connection with "CONNECT Connect
	// HTTP/1.1" and wants a 2xx before the exchange (a trellis-proxy's
	// outbound listener in explicit mode).
	Connect string
	Size    int           // bytes each way per request
	Timeout time.Duration // per request; default 5s
	// NewConnPerRequest dials (and CONNECTs) for every request and closes
	// the connection after it: connection churn.
	NewConnPerRequest bool
}

// maxStreamSize bounds one exchange, for the sender and ServeStream alike.
const maxStreamSize = 64 << 20

// StreamWorkers returns n workers, each owning one connection (or, with
// NewConnPerRequest, one at a time). Close the closer after the runs.
func StreamWorkers(t StreamTarget, n int) ([]Worker, io.Closer) {
	if t.Timeout <= 0 {
		t.Timeout = 5 * time.Second
	}
	payload := make([]byte, 4+t.Size)
	binary.BigEndian.PutUint32(payload, uint32(t.Size))
	for i := 4; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	conns := make(streamClosers, n)
	workers := make([]Worker, n)
	for i := range conns {
		c := &streamConn{t: t, payload: payload, buf: make([]byte, min(64<<10, max(t.Size, 512)))}
		conns[i] = c
		workers[i] = c.do
	}
	return workers, conns
}

type streamClosers []*streamConn

func (cs streamClosers) Close() error {
	for _, c := range cs {
		c.close()
	}
	return nil
}

type streamConn struct {
	lazyConn
	t       StreamTarget
	payload []byte // length prefix and bytes, shared read-only
	buf     []byte
}

func (c *streamConn) do(ctx context.Context) error {
	if c.conn == nil {
		if err := c.open(ctx); err != nil {
			c.close()
			return err
		}
	}
	err := c.exchange()
	if err != nil || c.t.NewConnPerRequest {
		c.close()
	}
	return err
}

// open dials and, for a proxy, sends the CONNECT.
func (c *streamConn) open(ctx context.Context) error {
	if err := c.dial(ctx, c.t.Addr, c.t.Timeout); err != nil {
		return err
	}
	if c.t.Connect == "" {
		return nil
	}
	conn := c.conn
	if err := conn.SetDeadline(time.Now().Add(c.t.Timeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, "CONNECT "+c.t.Connect+" HTTP/1.1\r\nHost: "+c.t.Connect+"\r\n\r\n"); err != nil {
		return fmt.Errorf("write CONNECT: %w", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("read CONNECT response: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("CONNECT %s: status %d (trellis-error %q)", c.t.Connect, resp.StatusCode, resp.Header.Get("trellis-error"))
	}
	return nil
}

func (c *streamConn) exchange() error {
	if err := c.conn.SetDeadline(time.Now().Add(c.t.Timeout)); err != nil {
		return err
	}
	if _, err := c.conn.Write(c.payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	n, err := io.CopyBuffer(discard{}, io.LimitReader(c.br, int64(c.t.Size)), c.buf)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if n != int64(c.t.Size) {
		return fmt.Errorf("read %d of %d bytes: %w", n, c.t.Size, io.ErrUnexpectedEOF)
	}
	return nil
}

// ServeStream answers StreamWorkers on one connection until the peer
// closes it: it reads a length and that many bytes, then sends that many
// bytes back, taken from out in chunks (out must not be empty). A
// connection idle for longer than idle is closed.
func ServeStream(conn net.Conn, out []byte, idle time.Duration) error {
	defer conn.Close()
	if len(out) == 0 {
		return errors.New("loadgen: ServeStream needs a non-empty out")
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	var hdr [4]byte
	for {
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read length: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[:]))
		if n > maxStreamSize {
			return fmt.Errorf("length %d over %d", n, maxStreamSize)
		}
		if _, err := io.CopyN(io.Discard, br, n); err != nil {
			return fmt.Errorf("read %d bytes: %w", n, err)
		}
		for n > 0 {
			chunk := out[:min(int64(len(out)), n)]
			if _, err := conn.Write(chunk); err != nil {
				return fmt.Errorf("write: %w", err)
			}
			n -= int64(len(chunk))
		}
	}
}
