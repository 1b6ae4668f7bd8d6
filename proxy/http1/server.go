package http1

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"time"
)

// Server serves HTTP/1.x connections, one request at a time per connection
// (pipelined requests wait their turn), with an http.Handler. Unlike
// net/http's server it refuses ambiguous framing, keeps Expect in the
// request (100 Continue is sent only when the handler first reads the body,
// i.e. once the app behind it asked for the body), and answers a header
// read timeout with 408.
type Server struct {
	Handler http.Handler
	Limits  Limits
	// ReadHeaderTimeout bounds reading a request head once its first byte
	// arrived (default 30s); IdleTimeout bounds the wait for the next
	// request on a keep-alive connection (default 5m, closed silently).
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// ConnContext returns the context of a connection's requests.
	ConnContext func(ctx context.Context, c net.Conn) context.Context
	// OnError is called for every message refused before the handler
	// (reason is one of the Reason constants).
	OnError func(status int, reason string)
	// ProxyError, when set, gives the trellis-proxy-error value of a
	// refusal with this status, so the server's own answers name the
	// proxy and the culprit like every other answer of the proxy.
	ProxyError func(status int) string
	Logger     *slog.Logger

	// watchDelay overrides watchDelayDefault (tests); watchHook, when
	// set, is called as a watch read starts (tests).
	watchDelay time.Duration
	watchHook  func()

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
}

// ServeConn serves c until it closes, an error, or a shutdown; it closes c
// unless a handler hijacked it.
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	cn := &conn{s: s, c: c, cr: &connReader{c: c, delay: durationOr(s.watchDelay, watchDelayDefault), hook: s.watchHook}}
	cn.br = bufio.NewReaderSize(cn.cr, 4<<10)
	cn.bw = bufio.NewWriterSize(c, 4<<10)
	if !s.track(cn, true) {
		_ = c.Close()
		return
	}
	defer s.track(cn, false)
	if s.ConnContext != nil {
		ctx = s.ConnContext(ctx, c)
	}
	for cn.serveOne(ctx) {
	}
	cn.cr.stopTimer()
	if !cn.hijacked {
		_ = c.Close()
	}
}

func (s *Server) track(cn *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.conns, cn)
		return true
	}
	if s.shutdown {
		return false
	}
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[cn] = struct{}{}
	return true
}

// Shutdown stops taking new connections and requests: idle connections
// close now, busy ones after their current response. The caller waits for
// its ServeConn calls to return.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.shutdown = true
	var idle []*conn
	for cn := range s.conns {
		if cn.idle {
			idle = append(idle, cn)
		}
	}
	s.mu.Unlock()
	for _, cn := range idle {
		_ = cn.c.Close()
	}
}

// Close closes every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.shutdown = true
	all := make([]*conn, 0, len(s.conns))
	for cn := range s.conns {
		all = append(all, cn)
	}
	s.mu.Unlock()
	for _, cn := range all {
		_ = cn.c.Close()
	}
}

func (s *Server) setIdle(cn *conn, idle bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cn.idle = idle
	return !s.shutdown
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// conn is one client connection.
type conn struct {
	s        *Server
	c        net.Conn
	cr       *connReader
	br       *bufio.Reader
	bw       *bufio.Writer
	idle     bool // guarded by s.mu
	hijacked bool
	served   int
	remote   string // RemoteAddr().String(), once per connection
}

func (cn *conn) remoteAddr() string {
	if cn.remote == "" {
		cn.remote = cn.c.RemoteAddr().String()
	}
	return cn.remote
}

// serveOne reads and handles one request; it reports whether the
// connection can carry another.
func (cn *conn) serveOne(ctx context.Context) bool {
	if !cn.waitRequest() {
		return false
	}
	_ = cn.c.SetReadDeadline(time.Now().Add(durationOr(cn.s.ReadHeaderTimeout, 30*time.Second)))
	req, f, err := ReadRequestHead(cn.br, cn.s.Limits)
	_ = cn.c.SetReadDeadline(time.Time{})
	if err != nil {
		cn.refuse(err)
		return false
	}
	cn.served++
	return cn.handle(ctx, req, f)
}

// waitRequest waits for the first byte of the next request: the
// connection counts as idle (a shutdown closes it) until it arrives.
func (cn *conn) waitRequest() bool {
	if cn.served == 0 {
		// A new connection's first bytes are already sniffed: serve its
		// first request even during a shutdown, as it was accepted before.
		_, err := cn.br.Peek(1)
		return err == nil
	}
	if cn.br.Buffered() > 0 {
		return cn.s.setIdle(cn, false)
	}
	if !cn.s.setIdle(cn, true) {
		return false
	}
	_ = cn.c.SetReadDeadline(time.Now().Add(durationOr(cn.s.IdleTimeout, 5*time.Minute)))
	_, err := cn.br.Peek(1)
	_ = cn.c.SetReadDeadline(time.Time{})
	cn.s.setIdle(cn, false)
	return err == nil
}

// refuse answers a request that could not be read, unless the client is
// gone or sent nothing of it, and closes.
func (cn *conn) refuse(err error) {
	var e *Error
	if !errors.As(err, &e) {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return // the client went away
		}
		e = &Error{Status: http.StatusRequestTimeout, Reason: ReasonHeaderTimeout,
			Msg: "request head not received within " + durationOr(cn.s.ReadHeaderTimeout, 30*time.Second).String()}
	}
	if cn.s.OnError != nil {
		cn.s.OnError(e.Status, e.Reason)
	}
	if cn.s.Logger != nil {
		cn.s.Logger.Debug("http1: request refused", "remote", cn.remoteAddr(), "status", e.Status, "reason", e.Reason, "err", e.Msg)
	}
	var proxyErr string
	if cn.s.ProxyError != nil {
		proxyErr = cn.s.ProxyError(e.Status)
	}
	writeError(cn.bw, e.Status, e.Msg, proxyErr)
	_ = cn.bw.Flush()
	lingerClose(cn.c)
}

// writeError writes a complete proxy-generated response that closes the
// connection.
func writeError(bw *bufio.Writer, status int, msg, proxyErr string) {
	body := msg + "\n"
	_, _ = bw.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	_, _ = bw.WriteString("Connection: close\r\nContent-Type: text/plain; charset=utf-8\r\n")
	_, _ = bw.WriteString("Trellis-Error: " + sanitize(msg) + "\r\n")
	if proxyErr != "" {
		_, _ = bw.WriteString("Trellis-Proxy-Error: " + sanitize(proxyErr) + "\r\n")
	}
	_, _ = bw.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	_, _ = bw.WriteString(body)
}

// lingerClose half-closes and drains briefly before closing, so the error
// response is not lost to a reset caused by unread request bytes.
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		_, _ = io.CopyN(io.Discard, c, 256<<10)
	}
	_ = c.Close()
}

// handle runs the handler for one request.
func (cn *conn) handle(ctx context.Context, req *http.Request, f Framing) bool {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := newResponse(cn, req)
	b := newBody(cn, w, req, f, cancel)
	req.Body = b
	req.RemoteAddr = cn.remoteAddr()
	req = req.WithContext(ctx)
	w.req = req
	if b.done {
		cn.cr.startBackgroundRead(cancel)
	}
	if !cn.runHandler(w, req) {
		return false
	}
	if w.hijacked {
		cn.hijacked = true
		return false
	}
	cn.cr.abortPendingRead()
	if !b.finish() {
		// The rest of the body cannot be skipped: this response is the
		// connection's last.
		w.closeAfter = true
	}
	reuse := w.finish()
	return reuse && !cn.cr.gone() && !cn.s.closing()
}

// runHandler calls the handler; a panic (http.ErrAbortHandler included)
// ends the connection.
func (cn *conn) runHandler(w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler && cn.s.Logger != nil {
				cn.s.Logger.Error("http1: handler panic", "panic", v, "stack", string(debug.Stack()))
			}
			cn.cr.abortPendingRead()
			ok = false
		}
	}()
	cn.s.Handler.ServeHTTP(w, req)
	return true
}

// watchDelayDefault is how long a handler runs, its request body done,
// before a background read starts watching for the client going away. A
// request answered sooner (most of them) costs no goroutine: the watch is
// a per-connection timer, armed and stopped per request; the price is
// that a client's disconnect is seen up to this much later.
const watchDelayDefault = 5 * time.Millisecond

// connReader sits below the bufio.Reader: while a handler runs past the
// watch delay and the request body is done, one background read watches
// for the client going away (cancelling the request's context) and keeps
// the byte it may read.
type connReader struct {
	c     net.Conn
	delay time.Duration
	hook  func()
	mu    sync.Mutex
	// armed: the timer will start the watch read for cancel.
	armed   bool
	timer   *time.Timer
	cancel  context.CancelFunc
	inRead  bool
	done    chan struct{}
	byteBuf [1]byte
	hasByte bool
	closed  bool
}

func (cr *connReader) Read(p []byte) (int, error) {
	cr.mu.Lock()
	if cr.inRead {
		cr.mu.Unlock()
		return 0, errors.New("http1: concurrent read on a connection")
	}
	if cr.hasByte && len(p) > 0 {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		cr.mu.Unlock()
		return 1, nil
	}
	cr.mu.Unlock()
	return cr.c.Read(p)
}

// startBackgroundRead arms the watch: if the handler is still running
// after the delay, the timer's goroutine reads one byte, cancelling the
// request (cancel) if the client went away.
func (cr *connReader) startBackgroundRead(cancel context.CancelFunc) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.inRead || cr.armed || cr.hasByte || cr.closed {
		return
	}
	cr.armed = true
	cr.cancel = cancel
	if cr.timer == nil {
		cr.timer = time.AfterFunc(cr.delay, cr.watch)
	} else {
		cr.timer.Reset(cr.delay)
	}
}

// watch runs in the timer's goroutine: the background read, unless the
// watch was disarmed meanwhile.
func (cr *connReader) watch() {
	cr.mu.Lock()
	if !cr.armed {
		cr.mu.Unlock()
		return
	}
	cancel := cr.cancel
	cr.armed, cr.cancel = false, nil
	cr.inRead = true
	cr.done = make(chan struct{})
	cr.mu.Unlock()
	if cr.hook != nil {
		cr.hook()
	}
	n, err := cr.c.Read(cr.byteBuf[:])
	cr.mu.Lock()
	if n == 1 {
		cr.hasByte = true
	}
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		cr.closed = true
		cancel()
	}
	cr.inRead = false
	close(cr.done)
	cr.mu.Unlock()
}

// stopTimer releases the connection's watch timer.
func (cr *connReader) stopTimer() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	cr.armed, cr.cancel = false, nil
	if cr.timer != nil {
		cr.timer.Stop()
	}
}

// abortPendingRead disarms the watch, or stops its read and waits for it.
func (cr *connReader) abortPendingRead() {
	cr.mu.Lock()
	if cr.armed {
		// A timer firing now finds the watch disarmed and returns.
		cr.armed, cr.cancel = false, nil
		cr.timer.Stop()
	}
	if !cr.inRead {
		cr.mu.Unlock()
		return
	}
	done := cr.done
	cr.mu.Unlock()
	_ = cr.c.SetReadDeadline(time.Unix(1, 0))
	<-done
	_ = cr.c.SetReadDeadline(time.Time{})
}

func (cr *connReader) gone() bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	return cr.closed
}
