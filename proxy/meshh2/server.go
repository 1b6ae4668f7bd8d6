package meshh2

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// respBufMax is how much response body a handler may write before it is
// sent; smaller responses go out with their HEADERS in one flush.
const respBufMax = 16 << 10

// ServerOptions configure a server connection.
type ServerOptions struct {
	Handler http.Handler
	// BaseContext is the parent of every request's context (values only:
	// cancelling it does not cancel requests).
	BaseContext          context.Context
	MaxConcurrentStreams uint32        // default 1000
	PrefaceTimeout       time.Duration // default 10s
	// IdleTimeout closes the connection (GOAWAY) after this long without
	// a stream, as x/net's server does for the inbound (default 10 min;
	// negative: never), so a peer cannot hold idle conns for ever.
	IdleTimeout time.Duration
	Logger      *slog.Logger
	// AcceptConnect passes CONNECT requests (RFC 9113 section 8.5:
	// :authority only) to Handler, as x/net's server does, for an
	// app-facing server whose handler answers them; the mesh hop never
	// carries CONNECT, so it refuses them (PROTOCOL_ERROR) by default.
	AcceptConnect bool
	// ProtocolError, when set, is told why the peer's connection ended
	// in an error of the peer's making (a connection error answered with
	// GOAWAY, a bad client preface): what x/net's server printed to its
	// ErrorLog, so that it can be logged and counted.
	ProtocolError func(err error)
}

// ServerConn serves HTTP/2 requests on one connection.
type ServerConn struct {
	core
	opts       ServerOptions
	remoteAddr string
	tlsState   *tls.ConnectionState
	cn         canon // reader goroutine only
	// respBufs recycles responseWriter body buffers (*[]byte, at most
	// respBufMax each) across the connection's requests.
	respBufs sync.Pool

	// Under core.mu.
	lastID       uint32
	handlers     int
	shuttingDown bool
	handlersDone sync.WaitGroup
	idleTimer    *time.Timer
	idleClosing  bool      // GOAWAY sent for idleness; the timer closes the conn
	lastActive   time.Time // when the last handler returned
}

type serverStream struct {
	stream
	sc     *ServerConn
	cancel context.CancelFunc
}

// NewServerConn prepares to serve nc; call Serve.
func NewServerConn(nc net.Conn, opts ServerOptions) *ServerConn {
	if opts.BaseContext == nil {
		opts.BaseContext = context.Background()
	}
	if opts.MaxConcurrentStreams == 0 {
		opts.MaxConcurrentStreams = 1000
	}
	if opts.PrefaceTimeout <= 0 {
		opts.PrefaceTimeout = 10 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sc := &ServerConn{opts: opts, remoteAddr: nc.RemoteAddr().String()}
	if tc, ok := nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		sc.tlsState = &cs
	}
	sc.core.init(newWconn(nc))
	return sc
}

// Serve reads frames until the connection ends, running Handler for each
// request; it returns after every handler has returned.
func (sc *ServerConn) Serve() error {
	if sc.opts.IdleTimeout > 0 {
		sc.mu.Lock()
		sc.lastActive = time.Now()
		sc.idleTimer = time.AfterFunc(sc.opts.IdleTimeout, sc.checkIdle)
		sc.mu.Unlock()
		defer sc.idleTimer.Stop()
	}
	err := sc.serve()
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		sc.mu.Lock()
		last := sc.lastID
		sc.mu.Unlock()
		sc.writeGoAway(last, http2.ErrCode(ce), "")
	}
	if sc.opts.ProtocolError != nil && (errors.As(err, &ce) || errors.Is(err, errBadPreface)) {
		sc.opts.ProtocolError(err)
	}
	cause := err
	if errors.Is(cause, io.EOF) {
		cause = ErrClosed
	}
	sc.closeAll(fmt.Errorf("meshh2: connection closed: %w", cause), func(st *stream) error {
		return fmt.Errorf("meshh2: stream %d: %w", st.id, cause)
	})
	sc.handlersDone.Wait()
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (sc *ServerConn) serve() error {
	nc := sc.w.nc
	_ = nc.SetReadDeadline(time.Now().Add(sc.opts.PrefaceTimeout))
	var pre [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(sc.w.br, pre[:]); err != nil {
		return fmt.Errorf("meshh2: reading client preface: %w", err)
	}
	if string(pre[:]) != http2.ClientPreface {
		return errBadPreface
	}
	err := sc.writePreamble(false,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: sc.opts.MaxConcurrentStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: StreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameRead},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: MaxHeaderListSize},
	)
	if err != nil {
		return err
	}
	f, err := sc.w.fr.ReadFrame()
	if err != nil {
		return fmt.Errorf("meshh2: reading client settings: %w", err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok || sf.IsAck() {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if err := sc.onSettings(sf, nil); err != nil {
		return err
	}
	_ = nc.SetReadDeadline(time.Time{})
	for {
		sc.w.flushHeld()
		f, err := sc.w.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// Mostly a HEADERS frame with a bad field: the stream
				// was opened, and is now closed.
				sc.mu.Lock()
				if se.StreamID > sc.lastID && se.StreamID%2 == 1 {
					sc.lastID = se.StreamID
				}
				sc.mu.Unlock()
				sc.streamError(se.StreamID, se.Code)
				continue
			}
			return frameReadError(err)
		}
		if err := sc.onFrame(f); err != nil {
			return err
		}
	}
}

// checkIdle closes the connection once it has carried no stream for
// IdleTimeout; streams the peer opens meanwhile are above the GOAWAY's
// last stream ID, so it may retry them elsewhere.
func (sc *ServerConn) checkIdle() {
	sc.mu.Lock()
	if sc.closed {
		sc.mu.Unlock()
		return
	}
	if sc.idleClosing {
		sc.mu.Unlock()
		_ = sc.w.nc.Close()
		return
	}
	if stillBusy(sc.idleTimer, sc.opts.IdleTimeout, sc.lastActive, sc.handlers > 0 || len(sc.streams) > 0) {
		sc.mu.Unlock()
		return
	}
	// GOAWAY now, close a little later: a request the peer sent before it
	// read the GOAWAY is refused (REFUSED_STREAM, safe to retry) instead
	// of lost to a reset connection.
	sc.shuttingDown = true
	sc.idleClosing = true
	last := sc.lastID
	sc.idleTimer.Reset(goAwayGrace)
	sc.mu.Unlock()
	sc.writeGoAway(last, http2.ErrCodeNo, "idle")
}

var errBadPreface = errors.New("meshh2: bad client preface")

// goAwayGrace is how long an idle conn stays open after its GOAWAY.
const goAwayGrace = time.Second

// frameReadError maps a framer error to the connection error to send.
func frameReadError(err error) error {
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return fmt.Errorf("meshh2: %w: %w", err, http2.ConnectionError(http2.ErrCodeFrameSize))
	}
	return err
}

// idle reports whether id names a stream the client has not opened yet
// (the reader goroutine is the only writer of lastID).
func (sc *ServerConn) idle(id uint32) bool {
	return id != 0 && (id%2 == 0 || id > sc.lastID)
}

// onFrame dispatches one frame after the settings exchange.
func (sc *ServerConn) onFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		return sc.onHeaders(f)
	case *http2.DataFrame:
		if sc.idle(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return sc.onData(f)
	case *http2.WindowUpdateFrame:
		if sc.idle(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return sc.onWindowUpdate(f)
	case *http2.SettingsFrame:
		return sc.onSettings(f, nil)
	case *http2.PingFrame:
		return sc.onPing(f)
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID {
			sc.streamError(f.StreamID, http2.ErrCodeProtocol)
		}
	case *http2.RSTStreamFrame:
		if f.StreamID == 0 || sc.idle(f.StreamID) {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if st := sc.lookup(f.StreamID); st != nil {
			sc.reset(&st.stream, f.ErrCode, &StreamError{StreamID: f.StreamID, Code: f.ErrCode, Remote: true}, false)
		}
	case *http2.GoAwayFrame:
		// The client sends no new streams; ours finish.
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil
}

// streamError resets one stream the framer or a check rejected.
func (sc *ServerConn) streamError(id uint32, code http2.ErrCode) {
	if st := sc.lookup(id); st != nil {
		sc.reset(&st.stream, code, &StreamError{StreamID: id, Code: code}, true)
		return
	}
	sc.writeRST(id, code)
}

func (sc *ServerConn) lookup(id uint32) *serverStream {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if st := sc.streams[id]; st != nil {
		ss, _ := st.ext.(*serverStream)
		return ss
	}
	return nil
}

// Shutdown sends GOAWAY, lets active streams finish until ctx ends, then
// closes the connection.
func (sc *ServerConn) Shutdown(ctx context.Context) error {
	sc.mu.Lock()
	already := sc.shuttingDown
	sc.shuttingDown = true
	last := sc.lastID
	sc.mu.Unlock()
	if !already {
		sc.writeGoAway(last, http2.ErrCodeNo, "")
	}
	sc.waitFor(ctx, func() bool { return sc.handlers == 0 && len(sc.streams) == 0 || sc.closed })
	if ctx.Err() == nil {
		sc.lingerClose(ctx)
	}
	_ = sc.w.nc.Close()
	return ctx.Err()
}

// lingerClose ends the write side and waits (goAwayGrace at most) for the
// peer to close, as x/net's server waits after a graceful GOAWAY. Closing the socket at once can lose the last response: a
// socket closed with unread input (a request the peer sent before it read
// the GOAWAY, a WINDOW_UPDATE) is reset by the kernel, and the reset can
// overtake what is still queued for the peer. The reader keeps reading
// meanwhile, and returns when the peer closes after reading our end.
func (sc *ServerConn) lingerClose(ctx context.Context) {
	w := sc.w
	cw, ok := w.nc.(interface{ CloseWrite() error })
	if !ok {
		// The peer would not learn that we are done: no point waiting.
		return
	}
	w.wmu.Lock()
	err := w.flushLocked()
	if err == nil {
		// TLS sends close_notify, TCP a FIN: the peer reads EOF after our
		// last frame and closes.
		err = cw.CloseWrite()
	}
	if err == nil {
		// What the reader writes from now on (a refusal of a request sent
		// before the peer read the GOAWAY, a PING's ack) cannot be sent:
		// drop it, rather than fail the write and close the socket with
		// that request unread, which is the reset this wait avoids.
		w.bw.Reset(io.Discard)
	}
	w.wmu.Unlock()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, goAwayGrace)
	defer cancel()
	sc.waitFor(ctx, func() bool { return sc.closed })
}

// Close closes the connection now.
func (sc *ServerConn) Close() error { return sc.w.nc.Close() }

func (sc *ServerConn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		// RFC 9113 section 5.3.1: a stream cannot depend on itself.
		sc.streamError(id, http2.ErrCodeProtocol)
		return nil
	}
	if ss := sc.lookup(id); ss != nil {
		return sc.onTrailers(ss, f)
	}
	sc.mu.Lock()
	if id <= sc.lastID {
		// A request on a closed stream ID is a connection error (RFC 9113
		// section 5.1.1). Trailers there are a stream error, ignored when we
		// reset the stream ourselves (they were in flight); the framer has
		// decoded them, so HPACK state is intact either way.
		quiet := sc.wasResetLocked(id)
		sc.mu.Unlock()
		if len(f.PseudoFields()) > 0 || !f.StreamEnded() {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if !quiet {
			sc.writeRST(id, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	sc.lastID = id
	// Handlers of reset streams may still run: count them too, so a peer
	// opening and resetting streams cannot pile up goroutines.
	max := int(sc.opts.MaxConcurrentStreams)
	refuse := sc.shuttingDown || len(sc.streams) >= max || sc.handlers >= max
	sc.mu.Unlock()
	if refuse {
		sc.writeRST(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.Truncated {
		sc.respondError(id, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	authority, scheme := f.PseudoValue("authority"), f.PseudoValue("scheme")
	// RFC 9113 section 8.3.1: every request but CONNECT (which the mesh
	// hop does not carry) has :method, :scheme and :path; a CONNECT has
	// :authority and neither of the others (section 8.5). :method is a
	// token (RFC 9110 section 9.1): anything else is malformed, not a
	// method to forward, tap or name a span after.
	connect := method == http.MethodConnect && sc.opts.AcceptConnect
	var malformed bool
	if connect {
		malformed = authority == "" || path != "" || scheme != ""
	} else {
		malformed = method == "" || path == "" || scheme == "" || method == http.MethodConnect
	}
	if malformed || f.PseudoValue("status") != "" || !httpguts.ValidHeaderFieldName(method) {
		sc.writeRST(id, http2.ErrCodeProtocol)
		return nil
	}
	if checkRequestFields(f.RegularFields()) != nil {
		sc.writeRST(id, http2.ErrCodeProtocol)
		return nil
	}
	var u *url.URL
	var err error
	if connect {
		u, path = &url.URL{Host: authority}, authority
	} else if u, err = url.ParseRequestURI(path); err != nil {
		sc.writeRST(id, http2.ErrCodeProtocol)
		return nil
	}
	h := sc.cn.fieldsToHeader(f.RegularFields())
	if authority == "" {
		authority = h.Get("Host")
	}
	delete(h, "Host")
	ss := &serverStream{sc: sc}
	ss.id = id
	ss.gotHead = true
	ss.ext = ss
	ctx, cancel := context.WithCancel(sc.opts.BaseContext)
	ss.cancel = cancel
	r := http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Host:       authority,
		RemoteAddr: sc.remoteAddr,
		RequestURI: path,
		TLS:        sc.tlsState,
	}
	req := r.WithContext(ctx)
	wantLen, ok := contentLength(h)
	if !ok || f.StreamEnded() && wantLen > 0 {
		cancel()
		sc.writeRST(id, http2.ErrCodeProtocol)
		return nil
	}
	ss.wantLen = wantLen
	if f.StreamEnded() {
		req.Body = http.NoBody
	} else {
		req.ContentLength = wantLen
		req.Trailer = declaredTrailers(h)
		ss.in = ss.initPipe()
		ss.trailerDst = &req.Trailer
		req.Body = &serverBody{ss: ss}
	}
	rw := &responseWriter{ss: ss, h: make(http.Header), isHead: method == http.MethodHead}
	if sb, ok := req.Body.(*serverBody); ok && httpguts.HeaderValuesContainsToken(h["Expect"], "100-continue") {
		// The handler's first read asks the client for the body.
		sb.cont = rw
	}
	sc.mu.Lock()
	ss.sendWin = sc.peerInitWin
	ss.recvWin = StreamWindow
	ss.recvEnd = f.StreamEnded()
	sc.streams[id] = &ss.stream
	sc.handlers++
	sc.handlersDone.Add(1)
	sc.mu.Unlock()
	go sc.runHandler(ss, rw, req)
	return nil
}

// streamEnded cancels the request's context when the stream failed (a
// reset, or the connection closed).
func (ss *serverStream) streamEnded(err error) {
	if err != nil {
		ss.cancel()
	}
}

// onTrailers handles HEADERS on a live stream: trailers, which must end
// the stream.
func (sc *ServerConn) onTrailers(ss *serverStream, f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	switch {
	case ss.gotHead && ss.recvEnd:
		// Half-closed (remote): RFC 9113 section 5.1.
		sc.reset(&ss.stream, http2.ErrCodeStreamClosed, &StreamError{StreamID: id, Code: http2.ErrCodeStreamClosed}, true)
	case !f.StreamEnded() || len(f.PseudoFields()) > 0:
		sc.reset(&ss.stream, http2.ErrCodeProtocol, &StreamError{StreamID: id, Code: http2.ErrCodeProtocol}, true)
	case f.Truncated:
		sc.reset(&ss.stream, http2.ErrCodeProtocol, errors.New("meshh2: request trailers exceed the size limit"), true)
	case checkRequestFields(f.RegularFields()) != nil:
		sc.malformed(&ss.stream, "connection-specific trailer field")
	default:
		ss.trailers = sc.cn.fieldsToHeader(f.RegularFields())
		sc.endRecv(&ss.stream)
	}
	return nil
}

// respondError answers a request the handler never sees.
func (sc *ServerConn) respondError(id uint32, status int) {
	w := sc.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.hbuf.Reset()
	w.field(":status", strconv.Itoa(status))
	if w.writeHeaderBlockLocked(id, true) == nil {
		_ = w.flushLocked()
	}
}

func (sc *ServerConn) runHandler(ss *serverStream, rw *responseWriter, req *http.Request) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler {
				sc.opts.Logger.Warn("meshh2: handler panic", "stream", ss.id, "panic", fmt.Sprint(p))
			}
			sc.reset(&ss.stream, http2.ErrCodeInternal, errors.New("meshh2: handler aborted"), true)
		}
		if ss.in != nil {
			dropped, _ := ss.in.closeRead()
			sc.consumed(nil, dropped)
		}
		ss.cancel()
		sc.mu.Lock()
		sc.lastActive = time.Now()
		sc.handlers--
		sc.cond.Broadcast()
		sc.mu.Unlock()
		sc.handlersDone.Done()
	}()
	bp, _ := sc.respBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	rw.buf = (*bp)[:0]
	sc.opts.Handler.ServeHTTP(rw, req)
	err := rw.send(nil, true)
	// Everything written is in the socket or bufio now (send copies); a
	// handler that keeps rw and writes later gets an error, not this buf.
	if b := rw.buf; cap(b) <= respBufMax {
		rw.buf = nil
		*bp = b[:0]
		sc.respBufs.Put(bp)
	}
	if err != nil {
		sc.reset(&ss.stream, http2.ErrCodeInternal, err, true)
		return
	}
	// The response is complete: stop a request body we will not read.
	sc.mu.Lock()
	open := !ss.recvEnd && !ss.ended
	sc.mu.Unlock()
	if open {
		sc.reset(&ss.stream, http2.ErrCodeNo, errors.New("meshh2: response complete"), true)
	}
}

// serverBody is a request body.
type serverBody struct {
	ss   *serverStream
	cont *responseWriter // non-nil: send 100 Continue on the first read
}

func (b *serverBody) Read(p []byte) (int, error) {
	if rw := b.cont; rw != nil {
		b.cont = nil
		rw.sendContinue()
	}
	n, err := b.ss.in.read(p)
	if n > 0 {
		b.ss.sc.consumed(&b.ss.stream, n)
	}
	return n, err
}

func (b *serverBody) Close() error {
	dropped, _ := b.ss.in.closeRead()
	b.ss.sc.consumed(nil, dropped)
	return nil
}

// responseWriter writes HEADERS, DATA and trailers directly under the
// connection write mutex from the handler's goroutine.
type responseWriter struct {
	ss          *serverStream
	h           http.Header
	sent        http.Header // what the HEADERS carry (h, or its snapshot)
	declared    []string    // trailer keys announced in the Trailer header
	status      int
	wroteHeader bool
	headerSent  bool
	finished    bool
	isHead      bool
	buf         []byte
	err         error
	// declLen is the Content-Length the handler declared (-1: none);
	// written counts body bytes accepted, so the body cannot exceed it.
	declLen int64
	written int64
}

func (rw *responseWriter) Header() http.Header { return rw.h }

// sendContinue sends 100 Continue unless the response has started.
func (rw *responseWriter) sendContinue() {
	ss, sc := rw.ss, rw.ss.sc
	w := sc.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	sc.mu.Lock()
	err := ss.sendErr
	sc.mu.Unlock()
	if err != nil || rw.headerSent {
		return
	}
	w.hbuf.Reset()
	w.field(":status", "100")
	if w.writeHeaderBlockLocked(ss.id, false) == nil {
		_ = w.flushLocked()
	}
}

func (rw *responseWriter) WriteHeader(code int) {
	if rw.wroteHeader || rw.finished {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("meshh2: invalid WriteHeader code %v", code))
	}
	if code < 200 {
		// Informational responses are not needed on the mesh hop.
		return
	}
	rw.wroteHeader = true
	rw.status = code
	rw.sent = rw.h
	rw.declLen = -1
	if vv := rw.h["Content-Length"]; len(vv) == 1 {
		if n, err := strconv.ParseInt(vv[0], 10, 64); err == nil && n >= 0 {
			rw.declLen = n
		}
	}
	if vv, ok := rw.h["Trailer"]; ok {
		// Declared trailers are set in h after WriteHeader: snapshot the
		// headers as they are now.
		rw.sent = rw.h.Clone()
		for _, v := range vv {
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k != "" {
					rw.declared = append(rw.declared, http.CanonicalHeaderKey(k))
				}
			}
		}
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

func (rw *responseWriter) Write(p []byte) (int, error) {
	if rw.finished {
		return 0, errors.New("meshh2: write after handler returned")
	}
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.err != nil {
		return 0, rw.err
	}
	if rw.isHead {
		return len(p), nil
	}
	if !bodyAllowed(rw.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if rw.declLen >= 0 && rw.written+int64(len(p)) > rw.declLen {
		// As net/http: the peer would reject the message as malformed.
		return 0, http.ErrContentLength
	}
	rw.written += int64(len(p))
	if len(rw.buf)+len(p) <= respBufMax {
		rw.buf = append(rw.buf, p...)
		return len(p), nil
	}
	if err := rw.send(p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (rw *responseWriter) WriteString(s string) (int, error) {
	if len(rw.buf)+len(s) <= respBufMax && rw.wroteHeader && rw.err == nil && !rw.isHead && !rw.finished && bodyAllowed(rw.status) &&
		(rw.declLen < 0 || rw.written+int64(len(s)) <= rw.declLen) {
		rw.written += int64(len(s))
		rw.buf = append(rw.buf, s...)
		return len(s), nil
	}
	return rw.Write([]byte(s))
}

// Flush sends the headers and buffered body now.
func (rw *responseWriter) Flush() { _ = rw.FlushError() }

// FlushError is what http.ResponseController.Flush uses.
func (rw *responseWriter) FlushError() error {
	if rw.finished {
		return nil
	}
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.send(nil, false)
}

// trailerFields returns the trailers to send at the end, or nil.
func (rw *responseWriter) trailerFields() http.Header {
	var t http.Header
	for _, k := range rw.declared {
		if vv := rw.h[k]; len(vv) > 0 {
			if t == nil {
				t = make(http.Header)
			}
			t[k] = vv
		}
	}
	for k, vv := range rw.h {
		if strings.HasPrefix(k, http.TrailerPrefix) && len(vv) > 0 {
			if t == nil {
				t = make(http.Header)
			}
			t[http.CanonicalHeaderKey(k[len(http.TrailerPrefix):])] = vv
		}
	}
	return t
}

// send writes the headers if not yet sent, the buffered body, then extra;
// when final, it ends the stream (with trailers when there are any).
// Everything that fits the send windows goes out in one flush.
func (rw *responseWriter) send(extra []byte, final bool) error {
	if rw.err != nil {
		return rw.err
	}
	if final {
		if !rw.wroteHeader {
			rw.WriteHeader(http.StatusOK)
		}
		rw.finished = true
	}
	ss, sc := rw.ss, rw.ss.sc
	var trailers http.Header
	if final {
		trailers = rw.trailerFields()
	}
	data, extraData := rw.buf, extra
	rw.buf = rw.buf[:0]
	total := len(data) + len(extraData)
	w := sc.w
	w.wmu.Lock()
	sc.mu.Lock()
	if err := ss.sendErr; err != nil {
		sc.mu.Unlock()
		w.wmu.Unlock()
		rw.err = err
		return err
	}
	n := int(min(int64(total), ss.sendWin, sc.sendWin))
	ss.sendWin -= int64(n)
	sc.sendWin -= int64(n)
	sc.mu.Unlock()
	endAll := final && trailers == nil
	if final && n == total {
		// END_STREAM goes out in this write (on the data or trailers).
		sc.markSentEnd(&ss.stream)
	}
	var err error
	if !rw.headerSent {
		rw.headerSent = true
		w.hbuf.Reset()
		w.field(":status", strconv.Itoa(rw.status))
		w.encodeHeaderLocked(rw.sent, skipTrailerPrefix)
		if final && trailers == nil && rw.declared == nil && !rw.isHead && bodyAllowed(rw.status) {
			if _, ok := rw.sent["Content-Length"]; !ok {
				w.field("content-length", strconv.Itoa(total))
			}
		}
		err = w.writeHeaderBlockLocked(ss.id, endAll && total == 0)
	} else if endAll && total == 0 {
		err = w.writeDataLocked(ss.id, nil, true)
	}
	// The part that fits the windows now.
	first := data
	if len(first) > n {
		first = first[:n]
	}
	second := extraData[:n-len(first)]
	if err == nil && len(first) > 0 {
		err = w.writeDataLocked(ss.id, first, endAll && n == total && len(second) == 0)
	}
	if err == nil && len(second) > 0 {
		err = w.writeDataLocked(ss.id, second, endAll && n == total)
	}
	done := n == total
	if err == nil && done && final && trailers != nil {
		w.hbuf.Reset()
		w.encodeHeaderLocked(trailers, 0)
		err = w.writeHeaderBlockLocked(ss.id, true)
	}
	if err == nil {
		err = w.flushLocked()
	}
	w.wmu.Unlock()
	if err != nil {
		rw.err = err
		return err
	}
	if done {
		if final {
			sc.sentEndStream(&ss.stream)
		}
		return nil
	}
	// The rest waits for WINDOW_UPDATE.
	restA, restB := data[len(first):], extraData[len(second):]
	if len(restA) > 0 {
		if err := sc.sendData(&ss.stream, restA, endAll && len(restB) == 0); err != nil {
			rw.err = err
			return err
		}
	}
	if len(restB) > 0 {
		if err := sc.sendData(&ss.stream, restB, endAll); err != nil {
			rw.err = err
			return err
		}
	}
	if final && trailers != nil {
		sc.mu.Lock()
		serr := ss.sendErr
		sc.mu.Unlock()
		if serr != nil {
			rw.err = serr
			return serr
		}
		w.wmu.Lock()
		w.hbuf.Reset()
		w.encodeHeaderLocked(trailers, 0)
		sc.markSentEnd(&ss.stream)
		err = w.writeHeaderBlockLocked(ss.id, true)
		if err == nil {
			err = w.flushLocked()
		}
		w.wmu.Unlock()
		if err != nil {
			rw.err = err
			return err
		}
		sc.sentEndStream(&ss.stream)
	}
	return nil
}
