package meshh2

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// stream is the state both roles share for one HTTP/2 stream. Fields under
// core.mu unless noted.
type stream struct {
	id      uint32
	sendWin int64 // peer's window for our DATA
	recvWin int64 // what the peer may still send us
	unacked int   // consumed bytes not yet returned by WINDOW_UPDATE
	sendErr error // set when we must stop sending (reset, conn closed)
	sentEnd bool  // we sent END_STREAM
	recvEnd bool  // peer sent END_STREAM
	ended   bool  // removed from the map
	gotHead bool  // initial HEADERS seen (reader goroutine only)
	// wantLen is the declared content-length (-1: none); gotLen counts the
	// DATA bytes received. A mismatch makes the message malformed.
	wantLen  int64
	gotLen   int64
	in       *pipe // incoming body (&inPipe); nil when the message had none
	inPipe   pipe
	trailers http.Header
	// trailerDst receives trailers when the body reaches EOF.
	trailerDst *http.Header
	// ext is the role's stream; its streamEnded runs (outside locks)
	// when the stream is removed. An interface call rather than a func
	// field: a method value or closure would be an allocation per stream.
	ext streamEnder // *clientStream or *serverStream
}

// streamEnder is told when its stream leaves the map: err is nil when both
// halves ended normally.
type streamEnder interface{ streamEnded(err error) }

// notifyEnded tells st's role that st was removed.
func (st *stream) notifyEnded(err error) {
	if st.ext != nil {
		st.ext.streamEnded(err)
	}
}

// core is the connection state shared by client and server: streams,
// flow-control windows, peer settings.
type core struct {
	w    *wconn
	mu   sync.Mutex
	cond sync.Cond // windows changed, stream ended, conn closed

	streams     map[uint32]*stream
	sendWin     int64 // peer's conn window for our DATA
	recvWin     int64 // what the peer may still send on the conn
	recvUnacked int
	peerInitWin int64
	closed      bool
	closeErr    error
	// resetIDs remembers the last streams we reset: late frames on them
	// are expected and ignored (RFC 9113 section 5.1), while frames on
	// other closed streams are errors.
	resetIDs [64]uint32
	resetPos int
}

// noteResetLocked records that we sent RST_STREAM on id.
func (c *core) noteResetLocked(id uint32) {
	c.resetIDs[c.resetPos%len(c.resetIDs)] = id
	c.resetPos++
}

// wasResetLocked reports whether we recently reset id.
func (c *core) wasResetLocked(id uint32) bool {
	for _, r := range c.resetIDs {
		if r == id {
			return true
		}
	}
	return false
}

// writeRST writes RST_STREAM(code) on id and remembers it.
func (c *core) writeRST(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	c.noteResetLocked(id)
	c.mu.Unlock()
	w := c.w
	w.wmu.Lock()
	if w.check(w.fr.WriteRSTStream(id, code)) == nil {
		_ = w.flushFromReaderLocked()
	}
	w.wmu.Unlock()
}

func (c *core) init(w *wconn) {
	c.w = w
	c.cond.L = &c.mu
	c.streams = make(map[uint32]*stream)
	c.sendWin = initialPeerWindow
	c.peerInitWin = initialPeerWindow
	c.recvWin = ConnWindow
}

// writePreamble writes our SETTINGS and the conn window increment.
func (c *core) writePreamble(preface bool, settings ...http2.Setting) error {
	w := c.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if preface {
		if _, err := w.bw.WriteString(http2.ClientPreface); err != nil {
			return w.check(err)
		}
	}
	if err := w.check(w.fr.WriteSettings(settings...)); err != nil {
		return err
	}
	if err := w.check(w.fr.WriteWindowUpdate(0, ConnWindow-initialPeerWindow)); err != nil {
		return err
	}
	return w.flushLocked()
}

// awaitSend reserves up to want bytes of send window for st, waiting for
// WINDOW_UPDATE when both are exhausted.
func (c *core) awaitSend(st *stream, want int) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.sendErr != nil {
			return 0, st.sendErr
		}
		if c.closed {
			return 0, c.closeErr
		}
		n := int64(want)
		n = min(n, st.sendWin, c.sendWin)
		if n > 0 {
			st.sendWin -= n
			c.sendWin -= n
			return int(n), nil
		}
		c.cond.Wait()
	}
}

// sendData writes p on st as DATA frames, waiting for window as needed,
// and flushes. endStream marks the last frame.
func (c *core) sendData(st *stream, p []byte, endStream bool) error {
	for len(p) > 0 || endStream {
		n := 0
		if len(p) > 0 {
			var err error
			if n, err = c.awaitSend(st, len(p)); err != nil {
				return err
			}
		}
		last := endStream && n == len(p)
		w := c.w
		w.wmu.Lock()
		if last {
			c.markSentEnd(st)
		}
		err := w.writeDataLocked(st.id, p[:n], last)
		if err == nil {
			err = w.flushLocked()
		}
		w.wmu.Unlock()
		if err != nil {
			return err
		}
		p = p[n:]
		if last {
			c.sentEndStream(st)
			return nil
		}
	}
	return nil
}

// waitFor waits until done (called under c.mu) holds or ctx ends.
func (c *core) waitFor(ctx context.Context, done func() bool) {
	stop := context.AfterFunc(ctx, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer stop()
	c.mu.Lock()
	for !done() && ctx.Err() == nil {
		c.cond.Wait()
	}
	c.mu.Unlock()
}

// markSentEnd records that st's END_STREAM is about to be written; the
// caller holds wmu and has not written it yet. Marked before the frame can
// reach the peer, so a whole answer read before the writer gets to
// sentEndStream ends the stream at once (recvEndStream), instead of leaving
// it open for a connection close that would fail it and drop its body.
func (c *core) markSentEnd(st *stream) {
	c.mu.Lock()
	st.sentEnd = true
	c.mu.Unlock()
}

// sentEndStream records that our half of st is done.
func (c *core) sentEndStream(st *stream) {
	c.mu.Lock()
	st.sentEnd = true
	done := st.recvEnd && !st.ended
	if done {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if done {
		st.notifyEnded(nil)
	}
}

// recvEndStream records the peer's END_STREAM on st.
func (c *core) recvEndStream(st *stream) {
	c.mu.Lock()
	st.recvEnd = true
	done := st.sentEnd && !st.ended
	if done {
		c.removeLocked(st)
	}
	c.mu.Unlock()
	if st.in != nil {
		st.in.closeWithError(io.EOF, st)
	}
	if done {
		st.notifyEnded(nil)
	}
}

func (st *stream) copyTrailers() {
	if st.trailerDst == nil || len(st.trailers) == 0 {
		return
	}
	if *st.trailerDst == nil {
		*st.trailerDst = make(http.Header, len(st.trailers))
	}
	for k, vv := range st.trailers {
		(*st.trailerDst)[k] = vv
	}
}

func (c *core) removeLocked(st *stream) {
	st.ended = true
	if st.sendErr == nil {
		st.sendErr = errStreamDone
	}
	delete(c.streams, st.id)
	c.cond.Broadcast()
}

var errStreamDone = &StreamError{Code: http2.ErrCodeStreamClosed}

// reset ends st with err; when sendRST it also writes RST_STREAM(code).
// Unread body bytes go back to the conn window.
func (c *core) reset(st *stream, code http2.ErrCode, err error, sendRST bool) {
	c.mu.Lock()
	if st.ended {
		c.mu.Unlock()
		return
	}
	st.sendErr = err
	c.removeLocked(st)
	if sendRST {
		c.noteResetLocked(st.id)
	}
	// st.in is published under c.mu by the reader goroutine; a reset may
	// come from another goroutine (a cancelled request context).
	in := st.in
	c.mu.Unlock()
	if in != nil {
		if n := in.breakWithError(err); n > 0 {
			c.consumed(nil, n)
		}
	}
	if sendRST {
		w := c.w
		w.wmu.Lock()
		if w.check(w.fr.WriteRSTStream(st.id, code)) == nil {
			_ = w.flushLocked()
		}
		w.wmu.Unlock()
	}
	st.notifyEnded(err)
}

// consumed returns n read bytes to the windows, sending WINDOW_UPDATE in
// batches. st is nil for bytes that belonged to no live stream.
func (c *core) consumed(st *stream, n int) {
	if n <= 0 {
		return
	}
	var sinc, cinc int
	c.mu.Lock()
	c.recvUnacked += n
	if c.recvUnacked >= connUpdateAt {
		cinc = c.recvUnacked
		c.recvUnacked = 0
		c.recvWin += int64(cinc)
	}
	if st != nil && !st.recvEnd && !st.ended {
		st.unacked += n
		if st.unacked >= streamUpdateAt {
			sinc = st.unacked
			st.unacked = 0
			st.recvWin += int64(sinc)
		}
	}
	closed := c.closed
	c.mu.Unlock()
	if closed || sinc+cinc == 0 {
		return
	}
	w := c.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if cinc > 0 && w.check(w.fr.WriteWindowUpdate(0, uint32(cinc))) != nil {
		return
	}
	if sinc > 0 && w.check(w.fr.WriteWindowUpdate(st.id, uint32(sinc))) != nil {
		return
	}
	_ = w.flushLocked()
}

// onData handles a DATA frame: flow-control accounting, then the stream's
// pipe. It returns a connection error for flow-control violations; the
// caller has rejected DATA on idle streams.
func (c *core) onData(f *http2.DataFrame) error {
	size := int64(f.Length)
	c.mu.Lock()
	if size > c.recvWin {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWin -= size
	st := c.streams[f.StreamID]
	if st == nil || st.recvEnd || st.in == nil {
		// Closed, half-closed (remote) or bodiless: STREAM_CLOSED, unless
		// we reset it ourselves and this DATA was already in flight.
		quiet := st == nil && c.wasResetLocked(f.StreamID)
		c.mu.Unlock()
		c.consumed(nil, int(size))
		switch {
		case st != nil && !st.ended:
			c.reset(st, http2.ErrCodeStreamClosed, &StreamError{StreamID: st.id, Code: http2.ErrCodeStreamClosed}, true)
		case !quiet:
			c.writeRST(f.StreamID, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if size > st.recvWin {
		c.mu.Unlock()
		c.consumed(nil, int(size))
		c.reset(st, http2.ErrCodeFlowControl, &StreamError{StreamID: st.id, Code: http2.ErrCodeFlowControl}, true)
		return nil
	}
	st.recvWin -= size
	data := f.Data()
	st.gotLen += int64(len(data))
	tooLong := st.wantLen >= 0 && st.gotLen > st.wantLen
	c.mu.Unlock()
	if tooLong {
		c.consumed(nil, int(size))
		c.malformed(st, "DATA beyond the declared content-length")
		return nil
	}
	// Padding is consumed at once.
	if pad := int(size) - len(data); pad > 0 {
		c.consumed(st, pad)
	}
	if len(data) > 0 && !st.in.write(data) {
		c.consumed(nil, len(data))
	}
	if f.StreamEnded() {
		c.endRecv(st)
	}
	return nil
}

// endRecv ends the peer's half of st, which must carry as many DATA bytes
// as its content-length said (RFC 9113 section 8.1.1).
func (c *core) endRecv(st *stream) {
	c.mu.Lock()
	short := st.wantLen >= 0 && st.gotLen != st.wantLen
	c.mu.Unlock()
	if short {
		c.malformed(st, "DATA shorter than the declared content-length")
		return
	}
	c.recvEndStream(st)
}

// malformed resets st with PROTOCOL_ERROR: the message is malformed.
func (c *core) malformed(st *stream, why string) {
	c.reset(st, http2.ErrCodeProtocol, fmt.Errorf("meshh2: stream %d: malformed message: %s: %w", st.id, why,
		&StreamError{StreamID: st.id, Code: http2.ErrCodeProtocol}), true)
}

// onWindowUpdate grows a send window; the caller has rejected idle
// streams. A stream window above 2^31-1 resets the stream.
func (c *core) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	inc := int64(f.Increment)
	var overflow *stream
	if f.StreamID == 0 {
		if c.sendWin+inc > 1<<31-1 {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWin += inc
	} else if st := c.streams[f.StreamID]; st != nil {
		if st.sendWin+inc > 1<<31-1 {
			overflow = st
		} else {
			st.sendWin += inc
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if overflow != nil {
		c.reset(overflow, http2.ErrCodeFlowControl, &StreamError{StreamID: overflow.id, Code: http2.ErrCodeFlowControl}, true)
	}
	return nil
}

// onSettings applies the peer's settings and acknowledges them.
// maxStreams receives SETTINGS_MAX_CONCURRENT_STREAMS when present.
func (c *core) onSettings(f *http2.SettingsFrame, maxStreams func(uint32)) error {
	if f.IsAck() {
		return nil
	}
	var maxFrame uint32
	err := f.ForeachSetting(func(s http2.Setting) error {
		// Valid rejects ENABLE_PUSH not 0/1, INITIAL_WINDOW_SIZE above
		// 2^31-1 and MAX_FRAME_SIZE out of range with the RFC's codes.
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			return c.setPeerInitWin(int64(s.Val))
		case http2.SettingMaxFrameSize:
			maxFrame = s.Val
		case http2.SettingMaxConcurrentStreams:
			if maxStreams != nil {
				maxStreams(s.Val)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	w := c.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if maxFrame != 0 {
		w.maxFrame = maxFrame
	}
	if err := w.check(w.fr.WriteSettingsAck()); err != nil {
		return err
	}
	return w.flushFromReaderLocked()
}

// setPeerInitWin applies a new SETTINGS_INITIAL_WINDOW_SIZE to every
// stream; a window pushed above 2^31-1 is a connection FLOW_CONTROL_ERROR.
func (c *core) setPeerInitWin(v int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	delta := v - c.peerInitWin
	for _, st := range c.streams {
		if st.sendWin+delta > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	c.peerInitWin = v
	for _, st := range c.streams {
		st.sendWin += delta
	}
	c.cond.Broadcast()
	return nil
}

func (c *core) onPing(f *http2.PingFrame) error {
	if f.IsAck() {
		return nil
	}
	w := c.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.check(w.fr.WritePing(true, f.Data)); err != nil {
		return err
	}
	return w.flushFromReaderLocked()
}

// closeAll marks the conn closed and fails every stream with errFor(st).
func (c *core) closeAll(cause error, errFor func(*stream) error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = cause
	streams := make([]*stream, 0, len(c.streams))
	for _, st := range c.streams {
		streams = append(streams, st)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	_ = c.w.nc.Close()
	for _, st := range streams {
		c.reset(st, http2.ErrCodeCancel, errFor(st), false)
	}
}

// stillBusy re-arms an idle timer and reports true unless the conn has
// carried no stream (busy false) for timeout since lastActive.
func stillBusy(t *time.Timer, timeout time.Duration, lastActive time.Time, busy bool) bool {
	left := timeout - time.Since(lastActive)
	if busy || left > 0 {
		t.Reset(max(left, time.Second))
		return true
	}
	return false
}

// goAway writes GOAWAY and flushes.
func (c *core) writeGoAway(lastID uint32, code http2.ErrCode, debug string) {
	w := c.w
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.check(w.fr.WriteGoAway(lastID, code, []byte(debug))) == nil {
		_ = w.flushLocked()
	}
}
