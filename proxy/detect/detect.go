// Package detect finds out which protocol a client speaks from the first
// bytes it sends: the HTTP/2 client preface, a TLS ClientHello (with its
// SNI), an HTTP/1.x request line, or anything else (opaque). The bytes read
// while deciding are replayed to whoever reads the returned conn next.
package detect

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Protocol is the result of detection.
type Protocol uint8

// Protocols, in the order of their metric label values.
const (
	Opaque Protocol = iota
	HTTP1
	HTTP2
	TLS
)

// String returns the metric label value of p.
func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "opaque"
	case HTTP1:
		return "http1"
	case HTTP2:
		return "http2"
	case TLS:
		return "tls"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Result is what Detect found.
type Result struct {
	Protocol Protocol
	// Conn replays every byte that was peeked, then reads from the original conn.
	Conn net.Conn
	// TimedOut is set when the client did not send enough bytes to decide
	// within the timeout; Protocol is then Opaque.
	TimedOut bool
	// SNI is the server_name of a TLS ClientHello, "" if absent or unparseable.
	SNI string
}

// Limits on how much is read before deciding.
const (
	// MaxHTTP1Line bounds the request line: longer is not treated as HTTP/1.
	MaxHTTP1Line = 8 << 10
	// maxTLSRecord is the largest plaintext record (2^14) plus its header.
	maxTLSRecord = 16<<10 + tlsRecordHeaderLen
	bufSize      = maxTLSRecord
)

// The pool avoids a 16 KiB allocation per connection; only the bytes
// actually read are copied out for the returned conn.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, bufSize)
	return &b
}}

// Detect peeks at the first bytes of conn. A read deadline of timeout (none
// if timeout <= 0) bounds the wait; it is cleared before returning. The
// error is non-nil only when reading fails (including EOF) before any byte
// arrived; the caller then owns and closes conn.
func Detect(conn net.Conn, timeout time.Duration) (Result, error) {
	if timeout > 0 {
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return Result{}, fmt.Errorf("detect: setting read deadline: %w", err)
		}
	}
	bp := bufPool.Get().(*[]byte)
	buf := *bp
	n := 0
	var (
		v        verdict
		timedOut bool
		readErr  error
	)
	for {
		m, err := conn.Read(buf[n:])
		n += m
		if m > 0 {
			v = classify(buf[:n], false)
			if v.done {
				break
			}
		}
		if err != nil {
			var ne net.Error
			if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
				timedOut = true
				v = verdict{done: true, proto: Opaque}
			} else {
				readErr = err
				v = classify(buf[:n], true)
			}
			break
		}
		if n == len(buf) {
			// Cannot happen with the current matchers (each decides by its
			// own cap), but never spin on a full buffer.
			v = verdict{done: true, proto: Opaque}
			break
		}
	}
	if timeout > 0 {
		// Clearing can only fail on a closed conn, which the caller sees next.
		_ = conn.SetReadDeadline(time.Time{})
	}
	var prefix []byte
	if n > 0 {
		prefix = make([]byte, n)
		copy(prefix, buf[:n])
	}
	bufPool.Put(bp)
	if n == 0 && readErr != nil {
		if readErr == io.EOF {
			return Result{}, fmt.Errorf("detect: connection closed before any byte: %w", readErr)
		}
		return Result{}, fmt.Errorf("detect: reading: %w", readErr)
	}
	return Result{
		Protocol: v.proto,
		Conn:     NewPrefixConn(conn, prefix),
		TimedOut: timedOut,
		SNI:      v.sni,
	}, nil
}

// verdict is the outcome of classifying the bytes seen so far.
type verdict struct {
	done  bool
	proto Protocol
	sni   string
}

// match is one matcher's opinion about a prefix.
type match uint8

const (
	needMore match = iota
	no
	yes
)

// classify decides from b, or asks for more bytes. final means no more bytes
// will come (EOF): undecided matchers then count as no, except TLS, whose
// record header already matched.
func classify(b []byte, final bool) verdict {
	if len(b) == 0 {
		if final {
			return verdict{done: true, proto: Opaque}
		}
		return verdict{}
	}
	h2 := matchHTTP2(b)
	if h2 == yes {
		return verdict{done: true, proto: HTTP2}
	}
	tm, sni := matchTLS(b)
	if tm == yes {
		return verdict{done: true, proto: TLS, sni: sni}
	}
	h1 := matchHTTP1(b)
	if h1 == yes {
		return verdict{done: true, proto: HTTP1}
	}
	if h2 == no && tm == no && h1 == no {
		return verdict{done: true, proto: Opaque}
	}
	if final {
		if tm == needMore && len(b) >= 3 {
			return verdict{done: true, proto: TLS}
		}
		return verdict{done: true, proto: Opaque}
	}
	return verdict{}
}

// PrefaceHTTP2 is the HTTP/2 client connection preface (RFC 9113 3.4).
const PrefaceHTTP2 = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

func matchHTTP2(b []byte) match {
	if len(b) >= len(PrefaceHTTP2) {
		if string(b[:len(PrefaceHTTP2)]) == PrefaceHTTP2 {
			return yes
		}
		return no
	}
	if string(b) == PrefaceHTTP2[:len(b)] {
		return needMore
	}
	return no
}

// NewPrefixConn returns a conn that reads prefix first, then c. It takes
// ownership of prefix. With an empty prefix it returns c itself.
func NewPrefixConn(c net.Conn, prefix []byte) net.Conn {
	if len(prefix) == 0 {
		return c
	}
	return &PrefixConn{Conn: c, prefix: prefix}
}

// PrefixConn replays bytes already read from Conn before reading from it.
type PrefixConn struct {
	net.Conn
	prefix []byte
}

// Read returns the remaining prefix first, then reads from the conn.
func (c *PrefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil // let the prefix be collected
		}
		return n, nil
	}
	return c.Conn.Read(p)
}

// WriteTo writes the prefix, then copies the conn, so that io.Copy from a
// PrefixConn over TCP still uses the kernel's splice path.
func (c *PrefixConn) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(c.prefix) > 0 {
		n, err := w.Write(c.prefix)
		total += int64(n)
		c.prefix = c.prefix[n:]
		if err != nil {
			return total, err
		}
		c.prefix = nil
	}
	n, err := io.Copy(w, c.Conn)
	return total + n, err
}

// CloseWrite half-closes the underlying conn when it supports it, so that
// opaque forwarding can propagate FIN.
func (c *PrefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("detect: %T does not support CloseWrite", c.Conn)
}

// NetConn returns the wrapped conn (same method name as tls.Conn), e.g. for
// origdst.Get.
func (c *PrefixConn) NetConn() net.Conn { return c.Conn }
