package http1

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// maxDiscard bounds the unread request body drained to keep a connection.
const maxDiscard = 256 << 10

// body is a request body. Reading it first sends 100 Continue when the
// client asked for it; reading it to the end starts the background read
// that notices the client going away. A framing error is sticky.
type body struct {
	cn       *conn
	w        *response
	src      io.Reader // nil: no body
	cancel   context.CancelFunc
	expect   bool
	closed   atomic.Bool
	mu       sync.Mutex // held during a Read; the server takes it after the handler
	done     bool       // EOF seen
	err      error
	finished bool // the server moved on: no more reads
}

func newBody(cn *conn, w *response, req *http.Request, f Framing, cancel context.CancelFunc) *body {
	b := &body{cn: cn, w: w, cancel: cancel}
	switch {
	case f.Chunked:
		b.src = newChunkedReader(cn.br, cn.s.Limits, func(h http.Header) {
			if req.Trailer == nil {
				req.Trailer = make(http.Header, len(h))
			}
			for k, vv := range h {
				req.Trailer[k] = vv
			}
		})
	case f.Length > 0:
		b.src = &lengthReader{r: cn.br, left: f.Length}
	default:
		b.done = true
	}
	b.expect = b.src != nil && req.ProtoMinor == 1 && httpguts.HeaderValuesContainsToken(req.Header["Expect"], "100-continue")
	return b
}

func (b *body) Read(p []byte) (int, error) {
	if b.closed.Load() {
		return 0, http.ErrBodyReadAfterClose
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.finished:
		return 0, http.ErrBodyReadAfterClose
	case b.err != nil:
		return 0, b.err
	case b.done:
		return 0, io.EOF
	}
	if b.expect {
		b.expect = false
		if err := b.w.sendContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.done = true
		if b.cn.br.Buffered() == 0 {
			b.cn.cr.startBackgroundRead(b.cancel)
		}
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// Close marks the body closed without waiting for a Read in progress.
func (b *body) Close() error {
	b.closed.Store(true)
	return nil
}

// finish ends the body after the handler returned and reports whether the
// connection can carry another request: the body was read to its end, or
// the rest is small enough to drain. A Read still in progress (a writer the
// handler abandoned) or a client still waiting for 100 Continue means no.
func (b *body) finish() bool {
	if !b.mu.TryLock() {
		return false
	}
	defer b.mu.Unlock()
	b.finished = true
	switch {
	case b.done:
		return true
	case b.err != nil || b.expect:
		return false
	}
	_ = b.cn.c.SetReadDeadline(time.Now().Add(durationOr(b.cn.s.ReadHeaderTimeout, 30*time.Second)))
	n, err := io.CopyN(io.Discard, b.src, maxDiscard+1)
	_ = b.cn.c.SetReadDeadline(time.Time{})
	return err == io.EOF && n <= maxDiscard
}
