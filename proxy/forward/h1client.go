package forward

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"golang.org/x/net/http/httpguts"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/proxy/http1"
)

// H1Client is an HTTP/1.1 client for the proxy's hop to a local app. Unlike
// http.Transport, which hands every exchange to two goroutines per
// connection (writeLoop and readLoop), it writes the request and reads the
// response in the caller's goroutine; only a request body is written from a
// goroutine of its own, so that the app may answer before it has read the
// whole body. Idle connections are kept per address, most recently used
// first, up to MaxIdlePerAddr.
//
// Callers pass requests whose hop-by-hop headers are already removed.
type H1Client struct {
	Dialer net.Dialer
	// Dial, when set, opens connections instead of Dialer (the inbound
	// proxy records the connections it opens to its app).
	Dial                  func(ctx context.Context, network, addr string) (net.Conn, error)
	MaxIdlePerAddr        int           // default 256
	IdleTimeout           time.Duration // default 90s
	ExpectContinueTimeout time.Duration // default 1s

	mu     sync.Mutex
	idle   map[string][]*h1Conn
	nidle  int
	timer  *time.Timer
	closed bool
}

type h1Conn struct {
	c      net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	addr   string
	idleAt time.Time
}

// errH1Closed is returned after CloseIdleConnections(true).
var errH1Closed = errors.New("http/1 client closed")

// The bufio sizes are those of net/http: responses of a few KiB are read
// with one read syscall; a bigger write buffer would only cost memory per
// idle connection.
const h1BufSize = 4 << 10

// RoundTrip sends req to addr (host:port) and returns the response. The
// response body must be read to EOF or closed; only a fully read body gives
// the connection back to the idle pool. When req's context ends before the
// response body is done, the connection is closed (the app sees the
// cancellation as a closed connection, as with http.Transport).
func (t *H1Client) RoundTrip(req *http.Request, addr string) (*http.Response, error) {
	if !validMethod(req.Method) {
		// A method is a token (RFC 9110 §9): a tab or space from an HTTP/2
		// peer's :method would split the request line differently at the
		// app than here. Refused before any connection is used.
		closeBody(req)
		return nil, fmt.Errorf("invalid request line: method %q is not a token", req.Method)
	}
	for attempt := 0; ; attempt++ {
		// A retry always dials: the pool's other connections to an app
		// that just closed one are likely closed too.
		cn, reused, err := t.get(req.Context(), addr, attempt > 0, !replayable(req))
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err := t.exchange(cn, req, reused)
		if err == nil {
			return resp, nil
		}
		// The app closed the connection before a byte of its answer: a
		// keep-alive connection it closed while idle, or one it never
		// accepted because it is shutting down (its listener closed with
		// the connection still queued). Retry once on a new connection
		// when the request may be sent again (idempotent, no body, RFC
		// 9110 section 9.2.2); an app no longer listening then refuses the
		// dial, which a mesh peer is told is unprocessed.
		if attempt == 0 && errors.Is(err, errStaleConn) && replayable(req) && req.Context().Err() == nil {
			continue
		}
		return nil, err
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil && req.Body != http.NoBody {
		_ = req.Body.Close()
	}
}

func replayable(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

// errStaleConn: the app closed the connection before sending a byte of
// its answer to a request without a body.
var errStaleConn = errors.New("connection closed by the app before a response")

// get returns an idle connection to addr, or with fresh set (or none idle)
// a new one; reused says which. With check set, an idle connection is
// first checked for a close the app already sent.
func (t *H1Client) get(ctx context.Context, addr string, fresh, check bool) (*h1Conn, bool, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, false, errH1Closed
	}
	for !fresh {
		list := t.idle[addr]
		if len(list) == 0 {
			break
		}
		cn := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		t.nidle--
		t.mu.Unlock()
		// A request that cannot be sent again is written only on a
		// connection with no EOF pending (one non-blocking peek): an app
		// that shuts down closes its idle keep-alive connections at once,
		// and a body written on one of them could have been read. One
		// that can be sent again skips the syscall: if the app closed
		// the connection, RoundTrip sends it again on a new one.
		if cn.br.Buffered() == 0 && (!check || alive(cn.c)) {
			return cn, true, nil
		}
		_ = cn.c.Close()
		t.mu.Lock()
	}
	t.mu.Unlock()
	dial := t.Dialer.DialContext
	if t.Dial != nil {
		dial = t.Dial
	}
	c, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{c: c, br: bufio.NewReaderSize(c, h1BufSize), bw: bufio.NewWriterSize(c, h1BufSize), addr: addr}, false, nil
}

// alive reports whether an idle connection has nothing pending to read (no
// EOF, no stray bytes): one non-blocking MSG_PEEK.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && ok
}

func (t *H1Client) put(cn *h1Conn) {
	cn.idleAt = time.Now()
	max := t.MaxIdlePerAddr
	if max <= 0 {
		max = 256
	}
	t.mu.Lock()
	if t.closed || len(t.idle[cn.addr]) >= max {
		t.mu.Unlock()
		_ = cn.c.Close()
		return
	}
	if t.idle == nil {
		t.idle = make(map[string][]*h1Conn)
	}
	t.idle[cn.addr] = append(t.idle[cn.addr], cn)
	t.nidle++
	if t.timer == nil {
		t.timer = time.AfterFunc(t.idleTimeout(), t.prune)
	}
	t.mu.Unlock()
}

func (t *H1Client) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return 90 * time.Second
}

// prune closes connections idle for longer than IdleTimeout and re-arms
// itself while any connection is idle.
func (t *H1Client) prune() {
	limit := time.Now().Add(-t.idleTimeout())
	var stale []*h1Conn
	t.mu.Lock()
	for addr, list := range t.idle {
		// Oldest first: the list is pushed and popped at its end.
		n := 0
		for n < len(list) && list[n].idleAt.Before(limit) {
			stale = append(stale, list[n])
			n++
		}
		if n > 0 {
			rest := append(list[:0:0], list[n:]...)
			t.idle[addr] = rest
			t.nidle -= n
		}
		if len(t.idle[addr]) == 0 {
			delete(t.idle, addr)
		}
	}
	t.timer = nil
	if t.nidle > 0 && !t.closed {
		t.timer = time.AfterFunc(t.idleTimeout()/4+time.Second, t.prune)
	}
	t.mu.Unlock()
	for _, cn := range stale {
		_ = cn.c.Close()
	}
}

// CloseIdleConnections closes every idle connection; with final set, the
// client refuses new requests afterwards.
func (t *H1Client) CloseIdleConnections(final bool) {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.nidle = 0
	if final {
		t.closed = true
	}
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	t.mu.Unlock()
	for _, list := range idle {
		for _, cn := range list {
			_ = cn.c.Close()
		}
	}
}

// exchange writes req on cn and reads the response head.
func (t *H1Client) exchange(cn *h1Conn, req *http.Request, reused bool) (*http.Response, error) {
	ctx := req.Context()
	stop := context.AfterFunc(ctx, func() { _ = cn.c.Close() })
	var wrote chan error // nil: no body being written
	fail := func(err error) (*http.Response, error) {
		stop()
		_ = cn.c.Close()
		if berr := bodyError(wrote); berr != nil {
			// The client's body failed first (a framing error, or the
			// client went away): that, not the closed app connection, is
			// the cause.
			return nil, berr
		}
		abandonBody(req, wrote)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, err
	}

	hasBody := req.Body != nil && req.Body != http.NoBody
	chunked := hasBody && req.ContentLength < 0
	if err := writeHead(cn.bw, req, hasBody, chunked); err != nil {
		return fail(err)
	}
	if err := cn.bw.Flush(); err != nil {
		if reused {
			// Nothing reached the app: the connection was already closed.
			err = fmt.Errorf("%w: %w", errStaleConn, err)
		}
		return fail(err)
	}

	sendBody := func() {
		wrote = make(chan error, 1)
		go func() {
			err := writeBody(cn.bw, req, chunked)
			if errors.Is(err, ErrRequestBody) {
				// The app waits for the rest of a body that will never
				// come, and we wait for its answer: close its connection
				// now so neither side hangs.
				_ = cn.c.Close()
			}
			wrote <- err
		}()
	}
	expect := hasBody && hasToken(req.Header["Expect"], "100-continue")
	if hasBody && !expect {
		sendBody()
	}
	if expect {
		// Wait for 100 Continue (or an early final answer) before sending
		// the body; on timeout, send it anyway.
		d := t.ExpectContinueTimeout
		if d <= 0 {
			d = time.Second
		}
		_ = cn.c.SetReadDeadline(time.Now().Add(d))
		_, err := cn.br.Peek(1)
		_ = cn.c.SetReadDeadline(time.Time{})
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return fail(err)
		}
		if err != nil { // timed out: no 100 coming
			sendBody()
		}
	}

	var resp *http.Response
	for n1xx := 0; ; n1xx++ {
		if n1xx == 0 && wrote == nil {
			// Nothing of the response yet, and no body sent: an EOF or a
			// reset here means the app closed the connection, an idle
			// one or one it never accepted (RoundTrip decides whether
			// the request may be sent again).
			if _, err := cn.br.Peek(1); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
					err = fmt.Errorf("%w: %w", errStaleConn, err)
				}
				return fail(err)
			}
		}
		var err error
		resp, err = http1.ReadResponse(cn.br, req, http1.Limits{})
		if err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		if n1xx >= 5 {
			return fail(errors.New("too many 1xx informational responses"))
		}
		if resp.StatusCode == http.StatusContinue && expect && wrote == nil {
			sendBody()
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("unexpected 101 Switching Protocols"))
	}
	// Final answer without the body sent (Expect: 100-continue refused):
	// the connection cannot carry another request.
	reuse := !resp.Close && !(hasBody && wrote == nil)
	b := &h1Body{t: t, cn: cn, rc: resp.Body, stop: stop, wrote: wrote, reuse: reuse, req: req}
	if resp.Body == http.NoBody {
		b.finish(true)
		return resp, nil
	}
	resp.Body = b
	return resp, nil
}

// writeHead writes the request line and headers.
func writeHead(bw *bufio.Writer, req *http.Request, hasBody, chunked bool) error {
	return writeHeadConn(bw, req, hasBody, chunked, false)
}

// writeHeadConn is writeHead; keepConnection passes the caller's Connection
// field on (an Upgrade request names its upgrade there, and the connection
// is the caller's alone from then on).
func writeHeadConn(bw *bufio.Writer, req *http.Request, hasBody, chunked, keepConnection bool) error {
	uri := req.URL.RequestURI()
	if !validMethod(req.Method) || uri == "" || !validValue(uri) {
		return fmt.Errorf("invalid request line %q %q", req.Method, uri)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if !validValue(host) {
		return fmt.Errorf("invalid host %q", host)
	}
	_, _ = bw.WriteString(req.Method)
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(uri)
	_, _ = bw.WriteString(" HTTP/1.1\r\nHost: ")
	_, _ = bw.WriteString(host)
	_, _ = bw.WriteString("\r\n")
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		case "Connection":
			if !keepConnection {
				continue
			}
		}
		if !validName(k) {
			return fmt.Errorf("invalid header name %q", k)
		}
		for _, v := range vv {
			if !validValue(v) {
				return fmt.Errorf("invalid value of header %s", k)
			}
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(strings.TrimSpace(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
	switch {
	case chunked:
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
		if len(req.Trailer) > 0 {
			_, _ = bw.WriteString("Trailer: ")
			first := true
			for k := range req.Trailer {
				if !validName(k) {
					return fmt.Errorf("invalid trailer name %q", k)
				}
				if IsMesh(k) {
					continue
				}
				if !first {
					_, _ = bw.WriteString(", ")
				}
				first = false
				_, _ = bw.WriteString(k)
			}
			_, _ = bw.WriteString("\r\n")
		}
	case hasBody || req.ContentLength > 0:
		_, _ = bw.WriteString("Content-Length: ")
		var nb [20]byte
		_, _ = bw.Write(strconv.AppendInt(nb[:0], req.ContentLength, 10))
		_, _ = bw.WriteString("\r\n")
	case req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch:
		_, _ = bw.WriteString("Content-Length: 0\r\n")
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// writeBody copies the request body: exactly ContentLength bytes, or chunks
// flushed as they come (a streaming body must make progress) and the
// trailers.
func writeBody(bw *bufio.Writer, req *http.Request, chunked bool) error {
	defer req.Body.Close()
	bp := GetBuf()
	defer PutBuf(bp)
	buf := *bp
	if !chunked {
		n, err := io.CopyBuffer(onlyWriter{bw}, sourceReader{io.LimitReader(req.Body, req.ContentLength)}, buf)
		if err != nil {
			return err
		}
		if n != req.ContentLength {
			return fmt.Errorf("%w: %d bytes of %d: %w", ErrRequestBody, n, req.ContentLength, io.ErrUnexpectedEOF)
		}
		return bw.Flush()
	}
	cw := httputil.NewChunkedWriter(bw)
	for {
		n, rerr := req.Body.Read(buf)
		if n > 0 {
			if _, err := cw.Write(buf[:n]); err != nil {
				return err
			}
			if err := bw.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: %w", ErrRequestBody, rerr)
		}
	}
	if err := cw.Close(); err != nil { // "0\r\n"
		return err
	}
	for k, vv := range req.Trailer {
		if !validName(k) {
			return fmt.Errorf("invalid trailer name %q", k)
		}
		if IsMesh(k) {
			continue // mesh fields never reach the app, not even as trailers
		}
		for _, v := range vv {
			if !validValue(v) {
				return fmt.Errorf("invalid value of trailer %s", k)
			}
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(v)
			_, _ = bw.WriteString("\r\n")
		}
	}
	_, _ = bw.WriteString("\r\n")
	return bw.Flush()
}

func validName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == ':' {
			return false
		}
	}
	return true
}

// validValue rejects what would split a header or request line (CR, LF,
// NUL); the servers in front of this client already validated the rest.
// validMethod reports whether m is a non-empty token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for _, r := range m {
		if !httpguts.IsTokenRune(r) {
			return false
		}
	}
	return true
}

func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' || c == 0 {
			return false
		}
	}
	return true
}

func hasToken(vv []string, token string) bool {
	for _, v := range vv {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(strings.TrimSpace(tok), token) {
				return true
			}
		}
	}
	return false
}

// h1Body gives the connection back once the response body was read to EOF
// and the request body was written in full; anything else closes it.
type h1Body struct {
	t     *H1Client
	cn    *h1Conn
	rc    io.ReadCloser
	req   *http.Request
	stop  func() bool
	wrote chan error
	reuse bool
	done  bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
		if ctxErr := b.req.Context().Err(); ctxErr != nil {
			err = ctxErr
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

// finish ends the exchange: complete, the connection goes back to the pool
// if it can carry another request; otherwise it is closed.
func (b *h1Body) finish(complete bool) {
	b.done = true
	stopped := b.stop()
	// Bytes the app sent past its response (a body longer than its
	// Content-Length, a body on a HEAD answer) would be read as the next
	// request's response, maybe another caller's (RFC 9112 §9.3): such a
	// connection is closed, never pooled.
	if complete && b.reuse && stopped && b.bodyWritten() && b.cn.br.Buffered() == 0 {
		b.t.put(b.cn)
		return
	}
	_ = b.cn.c.Close()
	abandonBody(b.req, b.wrote)
}

// bodyWritten reports whether the request body (if any) was written in
// full. The app has normally read it before answering, so the writer is
// done or about to be; a writer still blocked after a short wait means the
// app answered without reading the body.
func (b *h1Body) bodyWritten() bool {
	if b.wrote == nil {
		return true
	}
	select {
	case err := <-b.wrote:
		b.wrote = nil
		return err == nil
	default:
	}
	tm := time.NewTimer(50 * time.Millisecond)
	defer tm.Stop()
	select {
	case err := <-b.wrote:
		b.wrote = nil
		return err == nil
	case <-tm.C:
		return false
	}
}

// ErrRequestBody marks a failure reading the request body from the client
// (its framing was invalid, or it went away), as opposed to writing it to
// the app: a client fault.
var ErrRequestBody = errors.New("reading the request body")

// RequestBodyFault reports whether err is the client's fault: its request
// body was malformed or ended early. It returns the metric reason.
func RequestBodyFault(err error) (string, bool) {
	var he *http1.Error
	if errors.As(err, &he) && he.Status < 500 {
		return he.Reason, true
	}
	if errors.Is(err, ErrRequestBody) {
		return "body_read", true
	}
	return "", false
}

// AppFault returns the reason of a malformed response from the app.
func AppFault(err error) (string, bool) {
	var he *http1.Error
	if errors.As(err, &he) && he.Status >= 500 {
		return he.Reason, true
	}
	return "", false
}

// sourceReader wraps read errors of a request body with ErrRequestBody.
type sourceReader struct{ r io.Reader }

func (s sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", ErrRequestBody, err)
	}
	return n, err
}

// bodyError returns the request body's source error if the body writer
// stopped on one (it has closed the connection; waits briefly for it).
func bodyError(wrote chan error) error {
	if wrote == nil {
		return nil
	}
	tm := time.NewTimer(100 * time.Millisecond)
	defer tm.Stop()
	select {
	case err := <-wrote:
		// Hand the result back for abandonBody's receive.
		wrote <- err
		if errors.Is(err, ErrRequestBody) {
			return err
		}
	case <-tm.C:
	}
	return nil
}

// abandonBody ends a request body writer that may still be running: the
// connection is closed already, so its writes fail; it may also be blocked
// reading the client's body, which closing the body ends. Both happen off
// the caller's goroutine (closing a server request body can wait for a
// Read in progress).
func abandonBody(req *http.Request, wrote chan error) {
	if wrote == nil {
		closeBody(req)
		return
	}
	go func() {
		closeBody(req)
		<-wrote
	}()
}
