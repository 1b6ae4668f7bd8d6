package forward

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ChanListener is a net.Listener fed by Push, so an http.Server can serve
// connections that were accepted and sniffed elsewhere.
type ChanListener struct {
	addr   net.Addr
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

// NewChanListener returns a listener reporting addr as its address.
func NewChanListener(addr net.Addr) *ChanListener {
	return &ChanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// Push hands a connection to the server; it fails once the listener is closed.
func (l *ChanListener) Push(c net.Conn) error {
	select {
	case l.ch <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

// Accept implements net.Listener.
func (l *ChanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *ChanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

// Addr implements net.Listener.
func (l *ChanListener) Addr() net.Addr { return l.addr }

// Tracker counts the connections a listener is handling so a drain can wait
// for them and, after the grace period, close what is left.
type Tracker struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Add registers a connection; call the returned func when done with it.
func (t *Tracker) Add(c net.Conn) func() {
	t.mu.Lock()
	if t.conns == nil {
		t.conns = make(map[net.Conn]struct{})
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		delete(t.conns, c)
		t.mu.Unlock()
		t.wg.Done()
	}
}

// Wait waits until every connection is done or ctx ends; then it closes
// whatever is still open and waits for its handler to return.
func (t *Tracker) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	t.mu.Lock()
	for c := range t.conns {
		_ = c.Close()
	}
	t.mu.Unlock()
	<-done
	return ctx.Err()
}

type closeWriter interface{ CloseWrite() error }

// Splice copies bytes both ways between a and b until both directions end,
// half-closing each side as its input ends. It returns the bytes copied
// a->b and b->a and the first error other than a clean end of stream.
func Splice(a, b net.Conn) (aToB, bToA int64, err error) {
	errc := make(chan error, 1)
	go func() {
		n, err := Copy(b, a)
		aToB = n
		halfClose(b)
		errc <- err
	}()
	n, err2 := Copy(a, b)
	bToA = n
	halfClose(a)
	err1 := <-errc
	_ = a.Close()
	_ = b.Close()
	if err1 != nil && !isClosed(err1) {
		return aToB, bToA, err1
	}
	if err2 != nil && !isClosed(err2) {
		return aToB, bToA, err2
	}
	return aToB, bToA, nil
}

func halfClose(c net.Conn) {
	if cw, ok := c.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	// No half-close: end the whole stream so nothing waits forever.
	_ = c.SetReadDeadline(time.Now())
}

type halfCloser struct {
	net.Conn
	cw closeWriter
}

func (h halfCloser) CloseWrite() error { return h.cw.CloseWrite() }

// WithCloseWrite returns c with a CloseWrite method that half-closes raw, for
// wrappers (such as a sniffing conn) around a TCP or TLS connection.
func WithCloseWrite(c, raw net.Conn) net.Conn {
	if _, ok := c.(closeWriter); ok {
		return c
	}
	if cw, ok := raw.(closeWriter); ok {
		return halfCloser{Conn: c, cw: cw}
	}
	return c
}

func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}

// Errno names the system error behind err for the errno metric label
// ("" for a clean close or an error without an errno).
func Errno(err error) string {
	if err == nil {
		return ""
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		switch e {
		case syscall.ECONNRESET:
			return "ECONNRESET"
		case syscall.ECONNREFUSED:
			return "ECONNREFUSED"
		case syscall.EPIPE:
			return "EPIPE"
		case syscall.ETIMEDOUT:
			return "ETIMEDOUT"
		case syscall.ECONNABORTED:
			return "ECONNABORTED"
		case syscall.EHOSTUNREACH:
			return "EHOSTUNREACH"
		case syscall.ENETUNREACH:
			return "ENETUNREACH"
		default:
			return "errno_" + strconv.Itoa(int(e))
		}
	}
	return ""
}

// Serve accepts connections on ln until it is closed, handling each in its
// own goroutine tracked by t. Temporary accept errors (e.g. out of file
// descriptors) back off instead of spinning; stopping reports whether a
// failed Accept is a shutdown rather than an error.
func (t *Tracker) Serve(ln net.Listener, stopping func() bool, handle func(net.Conn)) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || stopping() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(delay*2, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		done := t.Add(c)
		go func() {
			defer done()
			handle(c)
		}()
	}
}
