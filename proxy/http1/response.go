package http1

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter (with http.Flusher, FlushError and
// http.Hijacker) of one request.
type response struct {
	cn  *conn
	req *http.Request
	hdr http.Header

	mu           sync.Mutex // guards the writer between 100 Continue and the response
	status       int
	wroteHeader  bool // final status chosen
	committed    bool // head written
	continueSent bool
	chunked      bool
	noBody       bool // 1xx, 204, 304
	isHead       bool
	pending      []byte // body held back before the head is sent
	length       int64  // announced Content-Length, -1 none
	written      int64
	closeAfter   bool
	hijacked     bool
	err          error
}

func newResponse(cn *conn, req *http.Request) *response {
	return &response{cn: cn, req: req, hdr: make(http.Header), length: -1, isHead: req.Method == http.MethodHead}
}

func (w *response) Header() http.Header { return w.hdr }

// WriteHeader sends a 1xx at once (100 Continue included, when a handler
// relays it) or records the final status.
func (w *response) WriteHeader(code int) {
	if w.hijacked || w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.mu.Lock()
		defer w.mu.Unlock()
		if code == http.StatusContinue {
			if w.continueSent || w.req.ProtoMinor == 0 {
				return
			}
			w.continueSent = true
		}
		w.writeStatusLine(code)
		w.writeFields(false)
		_, _ = w.cn.bw.WriteString("\r\n")
		w.setErr(w.cn.bw.Flush())
		return
	}
	w.wroteHeader, w.status = true, code
}

// sendContinue sends 100 Continue unless a response already started.
func (w *response) sendContinue() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed || w.continueSent {
		return nil
	}
	w.continueSent = true
	_, _ = w.cn.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return w.cn.bw.Flush()
}

func (w *response) setErr(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *response) writeStatusLine(code int) {
	bw := w.cn.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.WriteString(strconv.Itoa(code))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(code))
	_, _ = bw.WriteString("\r\n")
}

// writeFields writes the handler's header fields, except those the server
// frames itself; values cannot split the head (CR, LF and NUL become spaces).
func (w *response) writeFields(final bool) {
	bw := w.cn.bw
	for k, vv := range w.hdr {
		switch {
		case strings.HasPrefix(k, http.TrailerPrefix), !httpguts.ValidHeaderFieldName(k):
			continue
		case final && (k == "Transfer-Encoding" || k == "Connection"):
			continue
		}
		for _, v := range vv {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			_, _ = bw.WriteString(sanitize(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
}

func sanitize(v string) string {
	if strings.IndexFunc(v, func(r rune) bool { return r == '\r' || r == '\n' || r == 0 }) < 0 {
		return v
	}
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, v)
}

// commit chooses the framing and writes the head.
func (w *response) commit() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.committed {
		return
	}
	w.committed = true
	h := w.hdr
	w.noBody = w.status < 200 || w.status == http.StatusNoContent || w.status == http.StatusNotModified
	if cl, ok := h["Content-Length"]; ok {
		if n, valid := parseLength(strings.TrimSpace(strings.Join(cl, ""))); valid && len(cl) == 1 {
			w.length = n
		} else {
			delete(h, "Content-Length")
		}
	}
	if w.status == http.StatusNoContent {
		delete(h, "Content-Length")
		w.length = -1
	}
	if !w.noBody && !w.isHead && w.length < 0 {
		if w.req.ProtoMinor == 1 {
			w.chunked = true
		} else {
			w.closeAfter = true
		}
	}
	if !w.chunked {
		delete(h, "Trailer")
	}
	if w.req.Close || w.cn.s.closing() || httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		w.closeAfter = true
	}
	w.writeStatusLine(w.status)
	w.writeFields(true)
	bw := w.cn.bw
	if w.chunked {
		_, _ = bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if w.closeAfter {
		_, _ = bw.WriteString("Connection: close\r\n")
	} else if w.req.ProtoMinor == 0 {
		_, _ = bw.WriteString("Connection: keep-alive\r\n")
	}
	_, _ = bw.WriteString("\r\n")
}

// maxPending is how much body a handler may write before the head is
// sent: a response that ends within it gets a Content-Length (so HTTP/1.0
// keep-alive works and small answers are not chunked).
const maxPending = 4 << 10

func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		if _, ok := w.hdr["Content-Length"]; !ok && !w.isHead && len(w.pending)+len(p) <= maxPending {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		if err := w.commitPending(); err != nil {
			return 0, err
		}
	}
	return w.writeBody(p)
}

// commitPending sends the head and the body held back so far.
func (w *response) commitPending() error {
	w.commit()
	if len(w.pending) > 0 {
		pending := w.pending
		w.pending = nil
		if _, err := w.writeBody(pending); err != nil {
			return err
		}
	}
	return w.err
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.isHead {
		return len(p), nil
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		return 0, http.ErrContentLength
	}
	if len(p) == 0 {
		return 0, nil
	}
	bw := w.cn.bw
	if w.chunked {
		_, _ = bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		_, _ = bw.WriteString("\r\n")
	}
	n, err := bw.Write(p)
	if w.chunked && err == nil {
		_, err = bw.WriteString("\r\n")
	}
	w.written += int64(n)
	w.setErr(err)
	return n, err
}

// Flush sends the head and what is buffered.
func (w *response) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush uses.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.commitPending(); err != nil {
		return err
	}
	w.setErr(w.cn.bw.Flush())
	return w.err
}

// finish completes the response after the handler returned and reports
// whether the connection can carry another request.
func (w *response) finish() bool {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if _, ok := w.hdr["Content-Length"]; !w.committed && !ok && !w.isHead && bodyAllowed(w.status) &&
		!(w.req.ProtoMinor == 1 && w.hasTrailers()) {
		// The whole body is held back: announce its length (unless there
		// are trailers to send, which only chunked framing carries).
		w.hdr["Content-Length"] = []string{strconv.Itoa(len(w.pending))}
	}
	_ = w.commitPending()
	bw := w.cn.bw
	if w.chunked && w.err == nil {
		_, _ = bw.WriteString("0\r\n")
		w.writeTrailers()
		_, _ = bw.WriteString("\r\n")
	}
	w.setErr(bw.Flush())
	short := w.length >= 0 && !w.isHead && !w.noBody && w.written < w.length
	return w.err == nil && !w.closeAfter && !short
}

// writeTrailers writes the declared trailers and those set with
// http.TrailerPrefix.
func (w *response) writeTrailers() {
	bw := w.cn.bw
	write := func(k string, vv []string) {
		k = http.CanonicalHeaderKey(k)
		if !httpguts.ValidHeaderFieldName(k) || forbiddenTrailer(k) {
			return
		}
		for _, v := range vv {
			_, _ = bw.WriteString(k + ": " + sanitize(v) + "\r\n")
		}
	}
	for _, v := range w.hdr["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = strings.TrimSpace(k)
			if _, set := w.hdr[http.TrailerPrefix+k]; k != "" && !set {
				write(k, w.hdr[http.CanonicalHeaderKey(k)])
			}
		}
	}
	for k, vv := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			write(k[len(http.TrailerPrefix):], vv)
		}
	}
}

// Hijack hands the connection over, with the bytes already read past the
// request (including the one a background read may hold).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	if w.committed {
		return nil, nil, errors.New("http1: hijack after the response started")
	}
	cn := w.cn
	cn.cr.abortPendingRead()
	if cn.cr.hasByte {
		if _, err := cn.br.Peek(cn.br.Buffered() + 1); err != nil {
			return nil, nil, err
		}
	}
	if err := cn.bw.Flush(); err != nil {
		return nil, nil, err
	}
	w.hijacked = true
	return cn.c, bufio.NewReadWriter(cn.br, cn.bw), nil
}

func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// hasTrailers reports whether the handler declared or set trailers.
func (w *response) hasTrailers() bool {
	if len(w.hdr["Trailer"]) > 0 {
		return true
	}
	for k := range w.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}
