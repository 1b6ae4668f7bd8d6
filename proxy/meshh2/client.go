package meshh2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// inlineBodyMax is the largest request body written together with the
// request HEADERS in one flush (it is read before anything is sent).
const inlineBodyMax = 16 << 10

// bodyBufSize is the read size of streamed request bodies: two DATA frames.
const bodyBufSize = 32 << 10

// ClientOptions tune a client connection; zero values are defaults.
type ClientOptions struct {
	// ReadIdleTimeout: after this long without a frame from the peer, a
	// PING is sent; PingTimeout later without one, the conn is closed.
	// Zero disables the health check.
	ReadIdleTimeout time.Duration
	PingTimeout     time.Duration // default 10s
	// IdleTimeout closes the conn after this long without streams, so
	// conns to endpoints that went away do not linger. Zero: never.
	IdleTimeout time.Duration
}

// ClientConn is one HTTP/2 client connection. RoundTrip may be called
// concurrently; each request's frames are written by its caller.
type ClientConn struct {
	core
	opts     ClientOptions
	readDone chan struct{}
	bufs     sync.Pool // *[]byte request-body copy buffers

	// Under core.mu.
	nextID     uint32
	active     int
	reserved   int
	maxStreams int
	goAway     bool // no new streams (peer GOAWAY or our Shutdown)
	peerGoAway bool
	goAwayID   uint32
	lastRead   time.Time
	pingSent   bool
	health     *time.Timer
	idle       *time.Timer
	lastActive time.Time // when the last stream ended
	cn         canon     // reader goroutine only
}

type clientStream struct {
	stream
	cc     *ClientConn
	isHead bool
	respc  chan struct{} // closed once res or resErr is set
	once   sync.Once
	res    *http.Response
	resErr error
	stop   func() bool // stops the context watcher
	// got100 reports a 100 Continue to the request's httptrace, which
	// releases a body held for it (nil: no trace).
	got100 func()
	// reqBody is the request body being written (under cc.mu); closed when
	// the stream ends, so a writer blocked in its Read (a body held for a
	// 100 Continue the server will never send, after it answered early)
	// returns, as net/http's and x/net's transports do.
	reqBody *onceCloser
}

// onceCloser closes a body once, whoever comes first: the body writer or
// the stream's end.
type onceCloser struct {
	io.ReadCloser
	once sync.Once
	err  error
}

func (o *onceCloser) Close() error {
	o.once.Do(func() { o.err = o.ReadCloser.Close() })
	return o.err
}

// startBody runs the body writer; a stream that already ended closes the
// body at once.
func (cs *clientStream) startBody(body io.ReadCloser, req *http.Request) {
	oc := &onceCloser{ReadCloser: body}
	cc := cs.cc
	cc.mu.Lock()
	ended := cs.stream.ended
	if !ended {
		cs.reqBody = oc
	}
	cc.mu.Unlock()
	if ended {
		_ = oc.Close()
		return
	}
	go cs.writeBody(oc, req)
}

// NewClientConn starts HTTP/2 on nc (TLS already negotiated "h2", or
// prior-knowledge h2c): it writes the preface and settings and starts the
// connection's reader goroutine.
func NewClientConn(nc net.Conn, opts ClientOptions) (*ClientConn, error) {
	cc := &ClientConn{opts: opts, readDone: make(chan struct{}), nextID: 1, maxStreams: 100}
	cc.core.init(newWconn(nc))
	if cc.opts.PingTimeout <= 0 {
		cc.opts.PingTimeout = 10 * time.Second
	}
	err := cc.writePreamble(true,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: StreamWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: maxFrameRead},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: MaxHeaderListSize},
	)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	cc.lastRead = time.Now()
	cc.lastActive = cc.lastRead
	cc.mu.Lock()
	if cc.opts.ReadIdleTimeout > 0 {
		cc.health = time.AfterFunc(cc.opts.ReadIdleTimeout, cc.checkHealth)
	}
	if cc.opts.IdleTimeout > 0 {
		cc.idle = time.AfterFunc(cc.opts.IdleTimeout, cc.checkIdle)
	}
	cc.mu.Unlock()
	go cc.readLoop()
	return cc, nil
}

// checkHealth pings an idle peer and closes the conn if it stays silent.
func (cc *ClientConn) checkHealth() {
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	idle := time.Since(cc.lastRead)
	if cc.pingSent && idle >= cc.opts.ReadIdleTimeout+cc.opts.PingTimeout {
		cc.mu.Unlock()
		cc.closeAll(errors.New("meshh2: peer did not answer PING"), cc.errFor)
		return
	}
	next := cc.opts.ReadIdleTimeout - idle
	ping := false
	if next <= 0 {
		ping = !cc.pingSent
		cc.pingSent = true
		next = cc.opts.PingTimeout
	}
	cc.health.Reset(next)
	cc.mu.Unlock()
	if ping {
		w := cc.w
		w.wmu.Lock()
		if w.check(w.fr.WritePing(false, [8]byte{'t', 'r', 'e', 'l', 'l', 'i', 's'})) == nil {
			_ = w.flushLocked()
		}
		w.wmu.Unlock()
	}
}

// checkIdle closes the conn once it has carried no stream for IdleTimeout.
func (cc *ClientConn) checkIdle() {
	cc.mu.Lock()
	if cc.closed || stillBusy(cc.idle, cc.opts.IdleTimeout, cc.lastActive, cc.active > 0 || cc.reserved > 0) {
		cc.mu.Unlock()
		return
	}
	cc.goAway = true
	cc.mu.Unlock()
	cc.writeGoAway(0, http2.ErrCodeNo, "idle")
	cc.closeAll(&unprocessedError{cause: errors.New("connection closed after idle timeout")}, cc.errFor)
}

// ReserveNewRequest reserves a stream slot for a later RoundTrip; false if
// the conn is closed, going away, or at the peer's concurrency limit.
func (cc *ClientConn) ReserveNewRequest() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.usableLocked() || cc.active+cc.reserved >= cc.maxStreams {
		return false
	}
	cc.reserved++
	return true
}

// unreserve gives back a slot ReserveNewRequest took for a RoundTrip that
// returns before it opens its stream; otherwise the conn would count the
// slot as taken for good (and never be idle). Reservations are not
// named, so a RoundTrip made without one may give back another's: that
// RoundTrip then waits for a slot like any other.
func (cc *ClientConn) unreserve() {
	cc.mu.Lock()
	cc.unreserveLocked()
	cc.mu.Unlock()
}

func (cc *ClientConn) unreserveLocked() {
	if cc.reserved > 0 {
		cc.reserved--
		cc.cond.Broadcast()
	}
}

// Done is closed once the connection is closed.
func (cc *ClientConn) Done() <-chan struct{} { return cc.readDone }

func (cc *ClientConn) usableLocked() bool {
	return !cc.closed && !cc.goAway && cc.nextID < 1<<31-1
}

// CanTakeNewRequest reports whether a new request may start on cc.
func (cc *ClientConn) CanTakeNewRequest() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.usableLocked() && cc.active+cc.reserved < cc.maxStreams
}

// Close closes the connection, failing every stream.
func (cc *ClientConn) Close() error {
	cc.closeAll(ErrClosed, cc.errFor)
	return nil
}

// Shutdown stops new requests, waits for active streams to finish (or ctx
// to end), then sends GOAWAY and closes.
func (cc *ClientConn) Shutdown(ctx context.Context) error {
	cc.mu.Lock()
	cc.goAway = true
	cc.mu.Unlock()
	cc.waitFor(ctx, func() bool { return cc.active == 0 || cc.closed })
	err := ctx.Err()
	cc.writeGoAway(0, http2.ErrCodeNo, "")
	cc.closeAll(ErrClosed, cc.errFor)
	return err
}

// errFor is the error a stream gets when the conn dies: streams the peer
// never accepted (above its GOAWAY) are marked unprocessed.
func (cc *ClientConn) errFor(st *stream) error {
	cc.mu.Lock()
	ga, last, cause := cc.peerGoAway, cc.goAwayID, cc.closeErr
	cc.mu.Unlock()
	if cause == nil {
		cause = ErrClosed
	}
	if ga && st.id > last || errors.Is(cause, ErrUnprocessed) {
		return &unprocessedError{cause: cause}
	}
	return fmt.Errorf("meshh2: stream %d: %w", st.id, cause)
}

// RoundTrip sends req on a new stream and returns the response once its
// headers arrive. The response body is fed by the connection's reader.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	closeBody := func() {
		if body != nil {
			_ = body.Close()
		}
	}
	if err := ctx.Err(); err != nil {
		closeBody()
		cc.unreserve()
		return nil, err
	}
	inline, body, err := inlineBody(req, body)
	if err != nil {
		cc.unreserve()
		return nil, err
	}
	cs := &clientStream{cc: cc, isHead: req.Method == http.MethodHead, respc: make(chan struct{})}
	if tr := httptrace.ContextClientTrace(ctx); tr != nil {
		cs.got100 = tr.Got100Continue
	}
	cs.stream.ext = cs

	cc.mu.Lock()
	if !cc.usableLocked() {
		cc.unreserveLocked()
		cc.mu.Unlock()
		closeBody()
		return nil, &unprocessedError{cause: errors.New("connection closed or going away")}
	}
	if cc.reserved > 0 {
		cc.reserved--
	} else if cc.active >= cc.maxStreams {
		// Respect the peer's concurrency limit: wait for a slot.
		stop := context.AfterFunc(ctx, func() {
			cc.mu.Lock()
			cc.cond.Broadcast()
			cc.mu.Unlock()
		})
		for cc.active+cc.reserved >= cc.maxStreams && cc.usableLocked() && ctx.Err() == nil {
			cc.cond.Wait()
		}
		stop()
		if err := ctx.Err(); err != nil {
			cc.mu.Unlock()
			closeBody()
			return nil, err
		}
		if !cc.usableLocked() {
			cc.mu.Unlock()
			closeBody()
			return nil, &unprocessedError{cause: errors.New("connection closed or going away")}
		}
	}
	cc.active++
	cs.sendWin = cc.peerInitWin
	cs.recvWin = StreamWindow
	sendInline := inline != nil && int64(len(inline)) <= cc.sendWin && int64(len(inline)) <= cs.sendWin
	if sendInline {
		cc.sendWin -= int64(len(inline))
		cs.sendWin -= int64(len(inline))
	}
	cc.mu.Unlock()

	endWithHeaders := body == nil && (inline == nil || sendInline)
	w := cc.w
	w.wmu.Lock()
	cc.mu.Lock()
	if !cc.usableLocked() {
		cc.active--
		cc.cond.Broadcast()
		cc.mu.Unlock()
		w.wmu.Unlock()
		closeBody()
		return nil, &unprocessedError{cause: errors.New("connection closed or going away")}
	}
	cs.id = cc.nextID
	cs.wantLen = -1
	cc.nextID += 2
	cc.streams[cs.id] = &cs.stream
	cc.mu.Unlock()
	cc.encodeRequest(req, body != nil || inline != nil)
	if endWithHeaders {
		cc.markSentEnd(&cs.stream)
	}
	err = w.writeHeaderBlockLocked(cs.id, endWithHeaders && inline == nil)
	if err == nil && sendInline {
		err = w.writeDataLocked(cs.id, inline, true)
	}
	if err == nil {
		err = w.flushLocked()
	}
	w.wmu.Unlock()
	if err != nil {
		closeBody()
		cc.reset(&cs.stream, http2.ErrCodeCancel, err, false)
		return nil, err
	}
	if endWithHeaders {
		cc.sentEndStream(&cs.stream)
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() {
			cc.reset(&cs.stream, http2.ErrCodeCancel, ctx.Err(), true)
		})
		cc.mu.Lock()
		ended := cs.stream.ended
		if !ended {
			cs.stop = stop
		}
		cc.mu.Unlock()
		if ended {
			stop()
		}
	}
	switch {
	case body != nil:
		cs.startBody(body, req)
	case inline != nil && !sendInline:
		cs.startBody(io.NopCloser(bytes.NewReader(inline)), req)
	}
	<-cs.respc
	if cs.resErr != nil {
		return nil, cs.resErr
	}
	cs.res.Request = req
	return cs.res, nil
}

// inlineBody takes a small body that is wholly there now, to go out with
// the request's HEADERS in one write: one of known length (read to its
// end), or a proxied one of unknown length that has all arrived (a gRPC
// call's message: Buffered). Not when the client waits for 100 Continue
// before sending it, or sends trailers. It returns the bytes (nil: none
// taken) and the body still to stream (nil: none); on failure the body is
// closed.
func inlineBody(req *http.Request, body io.ReadCloser) ([]byte, io.ReadCloser, error) {
	if body == nil || req.ContentLength > inlineBodyMax || len(req.Trailer) > 0 ||
		httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue") {
		return nil, body, nil
	}
	if req.ContentLength > 0 {
		buf := make([]byte, req.ContentLength)
		_, err := io.ReadFull(body, buf)
		_ = body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("meshh2: reading request body: %w", err)
		}
		return buf, nil, nil
	}
	n, end, ok := bufferedOf(body)
	if !ok || !end || n > inlineBodyMax {
		return nil, body, nil
	}
	// One byte more than it holds, to read its end without waiting; if
	// the body goes on after all, its bytes go first and the rest streams.
	buf := make([]byte, n+1)
	m, err := io.ReadFull(body, buf)
	switch {
	case err == nil:
		return nil, struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), body), body}, nil
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		_ = body.Close()
		if len(req.Trailer) > 0 {
			// A trailer map filled in at the end (rare: a proxied
			// request's is usually a copy made before): the trailers
			// must follow the bytes, which writeBody does.
			return nil, io.NopCloser(bytes.NewReader(buf[:m])), nil
		}
		if m == 0 {
			return nil, nil, nil
		}
		return buf[:m], nil, nil
	default:
		_ = body.Close()
		return nil, nil, fmt.Errorf("meshh2: reading request body: %w", err)
	}
}

// errNoResponse: the stream ended cleanly before response headers (the
// usual case is that they arrived first, and setResponse ignores this).
var errNoResponse = errors.New("meshh2: stream ended without a response")

// streamEnded runs when the stream leaves the map.
func (cs *clientStream) streamEnded(err error) {
	cc := cs.cc
	cc.mu.Lock()
	cc.active--
	if cc.active == 0 && cc.idle != nil {
		cc.lastActive = time.Now()
	}
	cc.cond.Broadcast()
	stop := cs.stop
	cs.stop = nil
	reqBody := cs.reqBody
	cs.reqBody = nil
	cc.mu.Unlock()
	if stop != nil {
		stop()
	}
	if reqBody != nil {
		_ = reqBody.Close()
	}
	if err == nil {
		err = errNoResponse
	}
	cs.setResponse(nil, err)
}

func (cs *clientStream) setResponse(res *http.Response, err error) {
	cs.once.Do(func() {
		cs.res, cs.resErr = res, err
		close(cs.respc)
	})
}

// encodeRequest encodes req's header block into w.hbuf (under wmu).
func (cc *ClientConn) encodeRequest(req *http.Request, hasBody bool) {
	w := cc.w
	w.hbuf.Reset()
	host := req.Host
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	path := "/"
	scheme := "https"
	if req.URL != nil {
		if p := req.URL.RequestURI(); p != "" {
			path = p
		}
		if req.URL.Scheme != "" {
			scheme = req.URL.Scheme
		}
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	w.field(":method", method)
	w.field(":scheme", scheme)
	w.field(":authority", host)
	w.field(":path", path)
	w.encodeHeaderLocked(req.Header, dropContentLength)
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, k)
		}
		w.field("trailer", strings.Join(keys, ","))
	}
	if hasBody && req.ContentLength > 0 {
		w.field("content-length", strconv.FormatInt(req.ContentLength, 10))
	}
}

// writeBody streams a request body respecting the peer's windows, then
// trailers (HEADERS with END_STREAM) or an empty END_STREAM DATA frame.
func (cs *clientStream) writeBody(body io.ReadCloser, req *http.Request) {
	defer body.Close()
	cc := cs.cc
	bp, _ := cc.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, bodyBufSize)
		bp = &b
	}
	defer cc.bufs.Put(bp)
	buf := *bp
	// A declared length is sent exactly (as the inline path and the
	// HTTP/1 client do): the peer rejects DATA that disagrees with it.
	r := io.LimitedReader{R: body, N: math.MaxInt64}
	if req.ContentLength > 0 {
		r.N = req.ContentLength
	}
	var sent int64
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			sent += int64(n)
			if err := cc.sendData(&cs.stream, buf[:n], false); err != nil {
				return
			}
		}
		if rerr == io.EOF && req.ContentLength > 0 && sent < req.ContentLength {
			rerr = fmt.Errorf("%d bytes of %d: %w", sent, req.ContentLength, io.ErrUnexpectedEOF)
		}
		if rerr == io.EOF && r.N == 0 && len(req.Trailer) > 0 {
			// The declared length is sent, but a proxied request's
			// trailers are filled in only at its body's own EOF.
			rerr = drainBody(body, buf)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cc.reset(&cs.stream, http2.ErrCodeCancel, fmt.Errorf("meshh2: reading request body: %w", rerr), true)
			return
		}
	}
	if len(req.Trailer) == 0 {
		_ = cc.sendData(&cs.stream, nil, true)
		return
	}
	cc.mu.Lock()
	serr := cs.sendErr
	cc.mu.Unlock()
	if serr != nil {
		return
	}
	w := cc.w
	w.wmu.Lock()
	w.hbuf.Reset()
	w.encodeHeaderLocked(req.Trailer, 0)
	cc.markSentEnd(&cs.stream)
	err := w.writeHeaderBlockLocked(cs.id, true)
	if err == nil {
		err = w.flushLocked()
	}
	w.wmu.Unlock()
	if err == nil {
		cc.sentEndStream(&cs.stream)
	}
}

// drainBody reads body to its end past the declared length; bytes beyond
// it are dropped, as they are without trailers. It returns io.EOF, or the
// body's failure.
func drainBody(body io.Reader, buf []byte) error {
	for {
		if _, err := body.Read(buf); err != nil {
			return err
		}
	}
}

func (cc *ClientConn) readLoop() {
	defer close(cc.readDone)
	var err error
	for {
		var f http2.Frame
		cc.w.flushHeld()
		f, err = cc.w.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				cc.mu.Lock()
				st := cc.streams[se.StreamID]
				cc.mu.Unlock()
				if st != nil {
					cc.reset(st, se.Code, &StreamError{StreamID: se.StreamID, Code: se.Code}, true)
				}
				continue
			}
			err = frameReadError(err)
			break
		}
		cc.mu.Lock()
		cc.lastRead = time.Now()
		cc.pingSent = false
		// A stream we have not opened (or a pushed one: push is off).
		id := f.Header().StreamID
		idle := id != 0 && (id%2 == 0 || id >= cc.nextID)
		cc.mu.Unlock()
		switch f.(type) {
		case *http2.MetaHeadersFrame, *http2.DataFrame, *http2.WindowUpdateFrame, *http2.RSTStreamFrame:
			if idle {
				err = http2.ConnectionError(http2.ErrCodeProtocol)
			}
		}
		if err != nil {
			break
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			err = cc.onHeaders(f)
		case *http2.DataFrame:
			err = cc.onData(f)
		case *http2.WindowUpdateFrame:
			err = cc.onWindowUpdate(f)
		case *http2.SettingsFrame:
			err = cc.onSettings(f, func(v uint32) {
				cc.mu.Lock()
				cc.maxStreams = int(min(v, 1<<20))
				cc.mu.Unlock()
			})
		case *http2.PingFrame:
			err = cc.onPing(f)
		case *http2.RSTStreamFrame:
			cc.onRST(f)
		case *http2.GoAwayFrame:
			cc.onGoAway(f)
		case *http2.PushPromiseFrame:
			err = http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if err != nil {
			break
		}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		cc.writeGoAway(0, http2.ErrCode(ce), "")
	}
	cc.mu.Lock()
	if cc.health != nil {
		cc.health.Stop()
	}
	if cc.idle != nil {
		cc.idle.Stop()
	}
	cc.mu.Unlock()
	cause := err
	if cause == nil || errors.Is(cause, io.EOF) {
		cause = ErrClosed
	}
	cc.closeAll(fmt.Errorf("meshh2: reading from peer: %w", cause), cc.errFor)
}

func (cc *ClientConn) lookup(id uint32) *clientStream {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	st := cc.streams[id]
	if st == nil {
		return nil
	}
	cs, _ := st.ext.(*clientStream)
	return cs
}

func (cc *ClientConn) onHeaders(f *http2.MetaHeadersFrame) error {
	cs := cc.lookup(f.StreamID)
	if cs == nil {
		return nil
	}
	if f.Truncated {
		cc.reset(&cs.stream, http2.ErrCodeProtocol, errors.New("meshh2: response headers exceed the size limit"), true)
		return nil
	}
	if cs.gotHead {
		// Trailers.
		if !f.StreamEnded() {
			cc.reset(&cs.stream, http2.ErrCodeProtocol, errors.New("meshh2: response trailers without END_STREAM"), true)
			return nil
		}
		cs.trailers = cc.cn.fieldsToHeader(f.RegularFields())
		cc.endRecv(&cs.stream)
		return nil
	}
	status, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil || status < 100 || status > 999 {
		cc.reset(&cs.stream, http2.ErrCodeProtocol, errors.New("meshh2: malformed response :status"), true)
		return nil
	}
	if status < 200 {
		// Informational: the final response follows.
		if status == http.StatusContinue && cs.got100 != nil {
			cs.got100()
		}
		return nil
	}
	cs.gotHead = true
	h := cc.cn.fieldsToHeader(f.RegularFields())
	res := &http.Response{
		Status:     statusLine(status),
		StatusCode: status,
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     h,
		Trailer:    declaredTrailers(h),
	}
	n, ok := contentLength(h)
	if !ok {
		cc.malformed(&cs.stream, "bad content-length")
		return nil
	}
	res.ContentLength = n
	if !cs.isHead && bodyAllowed(status) {
		// DATA must then match it (RFC 9113 section 8.1.1); HEAD, 204
		// and 304 declare a length without a body.
		cc.mu.Lock()
		cs.wantLen = n
		cc.mu.Unlock()
	}
	if f.StreamEnded() {
		if !cs.isHead {
			res.ContentLength = 0
		}
		res.Body = http.NoBody
		cs.setResponse(res, nil)
		cc.recvEndStream(&cs.stream)
		return nil
	}
	in := cs.initPipe()
	cc.mu.Lock()
	cs.in = in
	// A reset (e.g. the caller cancelled) may have ended the stream after
	// lookup but before the body existed: it could not break the pipe, so
	// break it here or the caller would wait for a body that never comes.
	ended, endErr := cs.ended, cs.sendErr
	cc.mu.Unlock()
	if ended {
		if endErr == nil {
			endErr = errStreamDone
		}
		in.breakWithError(endErr)
	}
	cs.trailerDst = &res.Trailer
	res.Body = &clientBody{cs: cs}
	cs.setResponse(res, nil)
	return nil
}

func (cc *ClientConn) onRST(f *http2.RSTStreamFrame) {
	cs := cc.lookup(f.StreamID)
	if cs == nil {
		return
	}
	cc.mu.Lock()
	complete := cs.recvEnd
	cc.mu.Unlock()
	err := error(&StreamError{StreamID: f.StreamID, Code: f.ErrCode, Remote: true})
	if f.ErrCode == http2.ErrCodeRefusedStream {
		err = &unprocessedError{cause: err}
	}
	if complete {
		// The response is whole; the peer only stops our request body.
		cc.mu.Lock()
		cs.sendErr = err
		was := cs.stream.ended
		if !was {
			cc.removeLocked(&cs.stream)
		}
		cc.mu.Unlock()
		if !was {
			cs.streamEnded(nil)
		}
		return
	}
	cc.reset(&cs.stream, f.ErrCode, err, false)
}

func (cc *ClientConn) onGoAway(f *http2.GoAwayFrame) {
	cc.mu.Lock()
	cc.goAway = true
	cc.peerGoAway = true
	cc.goAwayID = f.LastStreamID
	var refused []*stream
	for id, st := range cc.streams {
		if id > f.LastStreamID {
			refused = append(refused, st)
		}
	}
	cc.mu.Unlock()
	for _, st := range refused {
		cc.reset(st, http2.ErrCodeCancel, &unprocessedError{cause: fmt.Errorf("peer sent GOAWAY (last stream %d, %v)", f.LastStreamID, f.ErrCode)}, false)
	}
}

// clientBody is a response body.
type clientBody struct {
	cs     *clientStream
	closed atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.cs.in.read(p)
	if n > 0 {
		b.cs.cc.consumed(&b.cs.stream, n)
	}
	return n, err
}

// Close abandons the body; an unfinished stream is cancelled.
func (b *clientBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	cs := b.cs
	dropped, ended := cs.in.closeRead()
	cs.cc.consumed(nil, dropped)
	if !ended || cs.sending() {
		// The response is done with but the request is not: a body the
		// server answered without reading. Reset so the stream (and its
		// body writer) ends instead of waiting for window or a continue.
		cs.cc.reset(&cs.stream, http2.ErrCodeCancel, errBodyClosed, true)
	}
	return nil
}

// sending reports whether the request side of the stream is still open.
func (cs *clientStream) sending() bool {
	cc := cs.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return !cs.stream.sentEnd && !cs.stream.ended
}
