// Package meshh2 is a lean HTTP/2 client and server connection for the mesh
// hop between two Trellis proxies. It is standard HTTP/2 on the wire (frames
// and HPACK come from golang.org/x/net/http2), but unlike x/net's
// Transport and Server it writes frames directly from the goroutine that
// produces them, under a connection write mutex, into a buffered writer
// flushed once per write group: a small request or response is one TLS
// write, with no serve-loop or per-request goroutine handoff.
package meshh2

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Flow-control and size defaults. The windows let a 10 MiB body stream
// without stalling on loopback round trips, while bounding what one peer
// can make us buffer (streams * stream window, capped by the conn window).
const (
	StreamWindow      = 1 << 20
	ConnWindow        = 4 << 20
	MaxHeaderListSize = 1 << 20
	defaultMaxFrame   = 16384
	maxFrameRead      = 1 << 20
	initialPeerWindow = 65535
	writeBufSize      = 32 << 10
	readBufSize       = 16 << 10
	// Window updates are batched: sent once a quarter of a window is used.
	streamUpdateAt = StreamWindow / 4
	connUpdateAt   = ConnWindow / 4
	headerCacheMax = 512
	// writeTimeout bounds one socket write: a peer that stops reading
	// fails the connection instead of holding the write mutex forever.
	writeTimeout = 30 * time.Second
)

// ErrUnprocessed marks requests the peer provably never processed (refused
// stream, or above a GOAWAY's last stream ID, or the connection was unusable
// before the request was written): they are safe to retry.
var ErrUnprocessed = errors.New("meshh2: request not processed by peer")

// ErrClosed is returned when the connection is closed.
var ErrClosed = errors.New("meshh2: connection closed")

// StreamError is a stream reset, by the peer or locally.
type StreamError struct {
	StreamID uint32
	Code     http2.ErrCode
	Remote   bool // reset by the peer
}

func (e *StreamError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	return fmt.Sprintf("meshh2: stream %d reset %s: %v", e.StreamID, who, e.Code)
}

// unprocessedError wraps a cause with ErrUnprocessed.
type unprocessedError struct{ cause error }

func (e *unprocessedError) Error() string {
	return "meshh2: request not processed by peer: " + e.cause.Error()
}
func (e *unprocessedError) Unwrap() []error { return []error{ErrUnprocessed, e.cause} }

// wconn is the write half shared by client and server connections: framer,
// buffered writer and HPACK encoder, all under wmu, so encoder state follows
// write order.
type wconn struct {
	nc  net.Conn
	br  *bufio.Reader // read side; the reader goroutine only
	wmu sync.Mutex
	bw  *bufio.Writer
	fr  *http2.Framer
	// Guarded by wmu.
	henc      *hpack.Encoder
	hbuf      bytes.Buffer
	maxFrame  uint32 // peer's SETTINGS_MAX_FRAME_SIZE
	werr      error  // sticky write error
	lowerKeys map[string]string
	// acksHeld: the reader wrote control frames (acks, resets) without
	// flushing them, as more input was already buffered; set under wmu,
	// cleared by every flush.
	acksHeld atomic.Bool
}

func newWconn(nc net.Conn) *wconn {
	w := &wconn{nc: nc, maxFrame: defaultMaxFrame}
	w.bw = bufio.NewWriterSize(deadlineWriter{nc}, writeBufSize)
	w.br = bufio.NewReaderSize(nc, readBufSize)
	w.fr = http2.NewFramer(w.bw, w.br)
	w.fr.SetReuseFrames()
	w.fr.SetMaxReadFrameSize(maxFrameRead)
	w.fr.MaxHeaderListSize = MaxHeaderListSize
	w.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	w.henc = hpack.NewEncoder(&w.hbuf)
	w.lowerKeys = make(map[string]string)
	return w
}

// deadlineWriter sets a write deadline before every socket write.
type deadlineWriter struct{ c net.Conn }

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.c.Write(p)
}

// flushLocked flushes the buffered writer; a failure is sticky and closes
// the connection so the reader fails every stream.
func (w *wconn) flushLocked() error {
	if w.werr != nil {
		return w.werr
	}
	if err := w.bw.Flush(); err != nil {
		w.failLocked(err)
	}
	w.acksHeld.Store(false)
	return w.werr
}

// flushFromReaderLocked flushes what the reader goroutine wrote, unless
// another whole frame is already buffered on the read side: then the
// reader handles it first, and its acks go out together (a burst of PINGs
// or bad frames costs one socket write, not one per frame). Reader only.
func (w *wconn) flushFromReaderLocked() error {
	if w.werr == nil && w.frameBuffered() {
		w.acksHeld.Store(true)
		return nil
	}
	return w.flushLocked()
}

// flushHeld flushes held acks before the reader may wait for input.
// Reader only.
func (w *wconn) flushHeld() {
	if !w.acksHeld.Load() || w.frameBuffered() {
		return
	}
	w.wmu.Lock()
	_ = w.flushLocked()
	w.wmu.Unlock()
}

// frameBuffered reports whether the next frame is wholly in the read
// buffer, so reading it cannot block. A HEADERS frame that does not end
// its header block counts as not buffered (its CONTINUATION may block).
func (w *wconn) frameBuffered() bool {
	n := w.br.Buffered()
	if n < frameHeaderLen {
		return false
	}
	h, _ := w.br.Peek(frameHeaderLen)
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	if http2.FrameType(h[3]) == http2.FrameHeaders && http2.Flags(h[4])&http2.FlagHeadersEndHeaders == 0 {
		return false
	}
	return n >= frameHeaderLen+length
}

const frameHeaderLen = 9

func (w *wconn) failLocked(err error) {
	if w.werr == nil {
		w.werr = fmt.Errorf("meshh2: write: %w", err)
		_ = w.nc.Close()
	}
}

// check records a framer error (its writes go to the bufio.Writer, so an
// error there is a connection write error).
func (w *wconn) check(err error) error {
	if err != nil {
		w.failLocked(err)
	}
	return w.werr
}

// writeHeaderBlockLocked writes w.hbuf as HEADERS plus CONTINUATION frames.
func (w *wconn) writeHeaderBlockLocked(id uint32, endStream bool) error {
	if w.werr != nil {
		return w.werr
	}
	block := w.hbuf.Bytes()
	max := int(w.maxFrame)
	first := block
	if len(first) > max {
		first = first[:max]
	}
	rest := block[len(first):]
	err := w.fr.WriteHeaders(http2.HeadersFrameParam{
		StreamID: id, BlockFragment: first, EndStream: endStream, EndHeaders: len(rest) == 0,
	})
	for err == nil && len(rest) > 0 {
		chunk := rest
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		rest = rest[len(chunk):]
		err = w.fr.WriteContinuation(id, len(rest) == 0, chunk)
	}
	return w.check(err)
}

// writeDataLocked writes p as DATA frames of at most maxFrame bytes; the
// caller has reserved flow-control window for all of p.
func (w *wconn) writeDataLocked(id uint32, p []byte, endStream bool) error {
	if w.werr != nil {
		return w.werr
	}
	max := int(w.maxFrame)
	for {
		chunk := p
		if len(chunk) > max {
			chunk = chunk[:max]
		}
		p = p[len(chunk):]
		if err := w.fr.WriteData(id, endStream && len(p) == 0, chunk); err != nil {
			return w.check(err)
		}
		if len(p) == 0 {
			return nil
		}
	}
}

// field encodes one header field; names are lower-cased through a small
// per-connection cache (canonical keys repeat on every request).
func (w *wconn) field(name, value string) {
	_ = w.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
}

func (w *wconn) lower(k string) string {
	if v, ok := w.lowerKeys[k]; ok {
		return v
	}
	l := strings.ToLower(k)
	if len(w.lowerKeys) < headerCacheMax {
		w.lowerKeys[k] = l
	}
	return l
}

// encodeFlags select what encodeHeaderLocked leaves out.
type encodeFlags uint8

const (
	// skipTrailerPrefix: a response's "Trailer:"-prefixed keys, sent later.
	skipTrailerPrefix encodeFlags = 1 << iota
	// dropContentLength: a request's length comes from ContentLength
	// (as in x/net), so a stale header cannot disagree with the DATA sent,
	// which the peer must reject (RFC 9113 section 8.1.1).
	dropContentLength
)

// encodeHeaderLocked encodes the regular fields of h, skipping
// connection-specific fields that HTTP/2 forbids and pseudo keys.
func (w *wconn) encodeHeaderLocked(h http.Header, flags encodeFlags) {
	for k, vv := range h {
		if !validFieldName(k) {
			continue
		}
		if flags&skipTrailerPrefix != 0 && strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := w.lower(k)
		switch lk {
		case "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive", "host":
			continue
		case "content-length":
			if flags&dropContentLength != 0 {
				continue
			}
		case "te":
			// Only "trailers" may cross an HTTP/2 hop.
			if len(vv) == 1 && strings.EqualFold(strings.TrimSpace(vv[0]), "trailers") {
				w.field("te", "trailers")
			}
			continue
		}
		for _, v := range vv {
			w.field(lk, v)
		}
	}
}

func validFieldName(k string) bool {
	if k == "" || k[0] == ':' {
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

// canon maps lower-case wire names to canonical header keys, cached per
// connection (read side only, so no lock).
type canon struct{ m map[string]string }

func (c *canon) key(lk string) string {
	if v, ok := c.m[lk]; ok {
		return v
	}
	k := textproto.CanonicalMIMEHeaderKey(lk)
	if c.m == nil {
		c.m = make(map[string]string)
	}
	if len(c.m) < headerCacheMax {
		c.m[lk] = k
	}
	return k
}

// fieldsToHeader converts decoded regular fields to an http.Header,
// joining cookies as HTTP/1 expects. Single values share one backing
// array (as net/textproto does), so a header block costs two allocations
// rather than one per field; full-capacity slices keep an append to one
// key from overwriting the next.
func (c *canon) fieldsToHeader(fields []hpack.HeaderField) http.Header {
	h := make(http.Header, len(fields))
	var cookies []string
	strs := make([]string, len(fields))
	for _, f := range fields {
		if f.Name == "cookie" {
			cookies = append(cookies, f.Value)
			continue
		}
		k := c.key(f.Name)
		if vv, ok := h[k]; ok {
			h[k] = append(vv, f.Value)
			continue
		}
		strs[0] = f.Value
		h[k] = strs[:1:1]
		strs = strs[1:]
	}
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	return h
}

// declaredTrailers returns a map holding the keys named by the Trailer
// header (values filled when the trailers arrive).
func declaredTrailers(h http.Header) http.Header {
	vv := h["Trailer"]
	if len(vv) == 0 {
		return nil
	}
	t := make(http.Header)
	for _, v := range vv {
		for _, k := range strings.Split(v, ",") {
			k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
			switch k {
			case "", "Transfer-Encoding", "Trailer", "Content-Length":
				continue
			}
			t[k] = nil
		}
	}
	return t
}

// pipe is a stream's receive buffer: the reader goroutine appends DATA,
// the body reader consumes it. Its size is bounded by the flow-control
// window we advertised.
type pipe struct {
	mu     sync.Mutex
	cond   sync.Cond
	buf    chunks
	err    error // io.EOF or a failure, returned once buf is drained
	broken error // returned immediately (reset, local close)
	closed bool  // reader closed: discard new data
	// atEnd's trailers are copied in the reader's goroutine when it
	// reaches err (so they do not race the body's reader). A pointer, not
	// a method value, which would cost an allocation per stream.
	atEnd *stream
}

// initPipe readies st's embedded pipe (one allocation less per body).
func (st *stream) initPipe() *pipe {
	p := &st.inPipe
	p.cond.L = &p.mu
	return p
}

// write appends data; false if the reader is gone (data discarded).
func (p *pipe) write(b []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.broken != nil || p.err != nil {
		return false
	}
	p.buf.write(b)
	p.cond.Signal()
	return true
}

// closeWithError ends the body after buffered data (io.EOF, or a stream
// failure); st's trailers are copied when the reader reaches the end.
func (p *pipe) closeWithError(err error, st *stream) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return
	}
	p.atEnd = st
	p.err = err
	p.cond.Broadcast()
}

// breakWithError fails the body now, dropping buffered data; it returns
// how many unread bytes were dropped (to return to the conn window).
func (p *pipe) breakWithError(err error) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken == nil {
		p.broken = err
	}
	n := p.buf.Len()
	p.buf.reset()
	p.cond.Broadcast()
	return n
}

func (p *pipe) read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.broken != nil {
			return 0, p.broken
		}
		if p.buf.Len() > 0 {
			return p.buf.read(b), nil
		}
		if p.err != nil {
			if st := p.atEnd; st != nil {
				p.atEnd = nil
				st.copyTrailers()
			}
			return 0, p.err
		}
		p.cond.Wait()
	}
}

// closeRead marks the reader gone; it returns the unread bytes dropped and
// whether the body had already ended.
func (p *pipe) closeRead() (dropped int, ended bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	dropped = p.buf.Len()
	p.buf.reset()
	if p.broken == nil {
		p.broken = errBodyClosed
	}
	p.cond.Broadcast()
	return dropped, p.err == io.EOF
}

var errBodyClosed = errors.New("meshh2: read on closed body")
