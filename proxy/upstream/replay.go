package upstream

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// maxReplayBody bounds the request body kept for a retry.
const maxReplayBody = 64 << 10

// canReplay reports whether the request can be sent again: its body
// was kept before it was sent, or it was kept as it was sent and ended
// (without trailers) within maxReplayBody.
func (s *sending) canReplay(r *http.Request) bool {
	if s.replayable {
		return true
	}
	if s.kept == nil || len(r.Trailer) > 0 {
		return false
	}
	b, held, ok := s.kept.whole()
	if !ok {
		return false
	}
	s.body, s.replayable, s.kept = b, true, nil
	s.held += held
	return true
}

// release gives back the bytes kept for replay, once the request is over.
func (s *sending) release(bound *retry.Bytes) {
	if s.kept != nil {
		s.held += s.kept.drop()
	}
	bound.Release(s.held)
	s.held = 0
}

// keptBody is a request body of unknown length (a gRPC message, a
// chunked upload) passed on as it is read, with a copy of up to
// maxReplayBody bytes: a small body that has ended by the time the peer
// proves it did not process the request (the mesh transport reads a small
// body whole to send it with the headers) can then be sent elsewhere, as
// one of known length is. A larger one is passed on and not kept, and so
// is one that would take the proxy over its bound on bytes kept (bound).
type keptBody struct {
	src   io.ReadCloser
	bound *retry.Bytes
	m     *metrics.Metrics // counts a body not kept for the bound

	mu    sync.Mutex
	buf   []byte
	held  int64 // bytes of bound held: cap(buf)
	over  bool  // not kept (too long, over the bound, or the request ended)
	eof   bool
	ended chan struct{} // closed once eof or over is set: nothing more to wait for
}

// newKeptBody keeps src as it is read, within bound.
func newKeptBody(src io.ReadCloser, bound *retry.Bytes, m *metrics.Metrics) *keptBody {
	return &keptBody{src: src, bound: bound, m: m, ended: make(chan struct{})}
}

// endWait bounds how long a replay decision waits for the sender to read
// the end of a body it has already read whole: the answer that proves a
// request unprocessed can come before the transport's last read (EOF),
// above all on a busy node.
const endWait = 100 * time.Millisecond

// settled closes ended once the body is over or fully read. Under mu.
func (k *keptBody) settled() {
	if (k.eof || k.over) && k.ended != nil {
		select {
		case <-k.ended:
		default:
			close(k.ended)
		}
	}
}

func (k *keptBody) Read(p []byte) (int, error) {
	n, err := k.src.Read(p)
	k.mu.Lock()
	if n > 0 && !k.over {
		k.keep(p[:n])
	}
	if err == io.EOF {
		k.eof = true
	}
	k.settled()
	k.mu.Unlock()
	return n, err
}

// keep appends b to the copy, growing it within maxReplayBody and the
// bound. Under mu.
func (k *keptBody) keep(b []byte) {
	need := len(k.buf) + len(b)
	if need > maxReplayBody {
		k.bound.Release(k.dropLocked())
		return
	}
	if need > cap(k.buf) {
		c := min(max(2*cap(k.buf), need, 512), maxReplayBody)
		if !k.bound.Acquire(int64(c - cap(k.buf))) {
			k.bound.Release(k.dropLocked())
			k.m.ReplayRefused()
			return
		}
		k.held += int64(c - cap(k.buf))
		nb := make([]byte, len(k.buf), c)
		copy(nb, k.buf)
		k.buf = nb
	}
	k.buf = append(k.buf, b...)
}

// drop stops keeping the body and returns the bytes of the bound it held.
func (k *keptBody) drop() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dropLocked()
}

func (k *keptBody) dropLocked() int64 {
	held := k.held
	k.over, k.buf, k.held = true, nil, 0
	k.settled()
	return held
}

func (k *keptBody) Close() error { return k.src.Close() }

// whole returns the body if it has ended and was kept whole, and hands
// over the bytes of the bound it holds.
func (k *keptBody) whole() ([]byte, int64, bool) {
	if k.ended != nil {
		t := time.NewTimer(endWait)
		select {
		case <-k.ended:
		case <-t.C:
		}
		t.Stop()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.eof || k.over {
		return nil, 0, false
	}
	held := k.held
	k.held = 0
	if k.buf == nil {
		return []byte{}, held, true // non-nil: sent as an empty body
	}
	return k.buf, held, true // no more reads append to it after EOF
}

// hasExpect: the client waits for 100 Continue before sending its body,
// so the body must not be read ahead of the upstream's decision.
func hasExpect(r *http.Request) bool {
	_, ok := r.Header["Expect"]
	return ok
}

// replayableBody reads a small request body of known length so that it
// can be sent more than once, if the bound on bytes kept allows. It
// returns the body (nil: use r.Body as it is), whether the request can be
// sent again at all and the bytes of the bound held.
func (u *Stage) replayableBody(r *http.Request, cb io.Reader) ([]byte, bool, int64, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, 0, nil
	}
	if r.ContentLength <= 0 || r.ContentLength > maxReplayBody || len(r.Trailer) > 0 {
		return nil, false, 0, nil
	}
	if hasExpect(r) {
		// Reading the body here would send 100 Continue on the app's
		// behalf, before the server decided.
		return nil, false, 0, nil
	}
	if !u.Replay.Acquire(r.ContentLength) {
		u.Metrics.ReplayRefused()
		return nil, false, 0, nil
	}
	b := make([]byte, r.ContentLength)
	if _, err := io.ReadFull(cb, b); err != nil {
		u.Replay.Release(r.ContentLength)
		return nil, false, 0, fmt.Errorf("reading request body: %w", err)
	}
	return b, true, r.ContentLength, nil
}
