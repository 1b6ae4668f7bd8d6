package forward

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
)

// BufSize is the size of pooled copy buffers.
const BufSize = 32 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, BufSize); return &b }}

// GetBuf returns a pooled 32 KiB buffer; give it back with PutBuf.
func GetBuf() *[]byte { return bufPool.Get().(*[]byte) }

// PutBuf returns a buffer to the pool.
func PutBuf(b *[]byte) { bufPool.Put(b) }

// CopyHeader copies src into dst (values are shared, not cloned: src is
// owned by a message the caller is done with).
func CopyHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = vv
	}
}

// ErrWriteResponse marks a failure writing to the downstream client (as
// opposed to reading the upstream response).
var ErrWriteResponse = errors.New("writing response")

// IsGRPC reports whether a content type is gRPC.
func IsGRPC(contentType string) bool {
	return strings.HasPrefix(contentType, "application/grpc")
}

// WriteResponse copies an upstream response to w: headers (hop-by-hop
// removed, and nothing of the server's own added), status, body and
// trailers. Bodies of unknown length (gRPC,
// chunked, SSE) are flushed whenever the next read might wait (after
// every read, unless the body can tell: BufferedOf) so streams make
// progress;
// fixed-length bodies are left to the server's buffering. It returns the
// number of body bytes written and the first error (reading upstream or
// writing downstream, the latter wrapping ErrWriteResponse).
func WriteResponse(w http.ResponseWriter, resp *http.Response) (int64, error) {
	h := w.Header()
	RemoveHopByHop(resp.Header)
	CopyHeader(h, resp.Header)
	keepResponseAbsent(h)
	// Announce trailers so an HTTP/1 server chunks the body instead of
	// computing a Content-Length that would drop them.
	if len(resp.Trailer) > 0 {
		if _, ok := h["Trailer"]; !ok {
			keys := make([]string, 0, len(resp.Trailer))
			for k := range resp.Trailer {
				keys = append(keys, k)
			}
			h["Trailer"] = []string{strings.Join(keys, ", ")}
		}
		// Whatever the upstream's version: an HTTP/2 app's server may
		// send a length with trailers, which HTTP/1.1 cannot carry.
		if resp.ContentLength >= 0 {
			delete(h, "Content-Length")
		}
	}
	w.WriteHeader(resp.StatusCode)
	flush := resp.ContentLength < 0
	n, err := copyBody(w, resp.Body, flush)
	if err == nil || errors.Is(err, io.EOF) {
		err = nil
	}
	for k, vv := range resp.Trailer {
		if IsMesh(k) {
			continue // an app's trellis-* trailer would pass for the proxy's
		}
		h[http.TrailerPrefix+k] = vv
	}
	return n, err
}

type flushWriter interface {
	FlushError() error
}

func copyBody(w http.ResponseWriter, body io.Reader, flush bool) (int64, error) {
	doFlush := flusher(w)
	if doFlush == nil {
		flush = false
	}
	// Send the headers now: a streaming response may not produce a body
	// byte for a long time. Not when its bytes (or its end) are already
	// there: they go out with them, in one write.
	if flush && wouldWait(body) {
		if err := doFlush(); err != nil {
			return 0, errors.Join(ErrWriteResponse, err)
		}
	}
	bp := GetBuf()
	defer PutBuf(bp)
	buf := *bp
	var total int64
	for {
		nr, rerr := body.Read(buf)
		if nr > 0 {
			nw, werr := w.Write(buf[:nr])
			total += int64(nw)
			if werr != nil {
				return total, errors.Join(ErrWriteResponse, werr)
			}
			// Flushed only when the next read might wait: bytes (or the
			// end, trailers included) already there leave with these, and
			// the handler's end flushes the last of them.
			if flush && rerr == nil && wouldWait(body) {
				if err := doFlush(); err != nil {
					return total, errors.Join(ErrWriteResponse, err)
				}
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
	}
}

// flusher returns w's flush, or nil when it cannot flush.
func flusher(w http.ResponseWriter) func() error {
	switch f := w.(type) {
	case flushWriter:
		return f.FlushError
	case http.Flusher:
		return func() error { f.Flush(); return nil }
	}
	return nil
}

// Copy copies src to dst with a pooled buffer.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	bp := GetBuf()
	defer PutBuf(bp)
	return io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *bp)
}

// onlyReader and onlyWriter hide WriterTo/ReaderFrom so io.CopyBuffer uses
// the pooled buffer instead of allocating its own.
type onlyReader struct{ io.Reader }

type onlyWriter struct{ io.Writer }
