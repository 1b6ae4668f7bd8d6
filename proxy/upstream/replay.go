package upstream

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// maxReplayBody bounds the request body kept for a retry.
const maxReplayBody = 64 << 10

// canReplay reports whether the request can be sent again: its body
// was kept before it was sent, or it is kept as it is sent and nothing of
// it was lost (within maxReplayBody and the bound, without trailers).
func (s *sending) canReplay() bool {
	if s.replayable {
		return true
	}
	return s.kept != nil && !s.trailers && s.kept.replayable()
}

// release gives back the bytes kept for replay, once the request is over.
func (s *sending) release(bound *retry.Bytes) {
	if s.kept != nil {
		s.held += s.kept.drop()
	}
	bound.Release(s.held)
	s.held = 0
}

// errBodyReplaced is what an attempt's sender reads once the body was
// given to a later attempt (or the request ended): it resets its stream,
// never ending it as if the body were complete.
var errBodyReplaced = errors.New("request body passed to another attempt")

// errBodyNotKept: a later attempt needs bytes that were not kept.
var errBodyNotKept = errors.New("request body not kept for a retry")

// keptBody is a request body of unknown length (a gRPC message, a
// chunked upload) passed on as it is read, with a copy of up to
// maxReplayBody bytes, so that a request the peer proves it did not
// process can be sent elsewhere without waiting for its body to end.
// Each attempt reads through its own keptReader: a later attempt is given
// the bytes kept, then the rest of the client's body as it arrives. An
// earlier attempt's sender may still be blocked in a read of the client's
// body when the next attempt starts (the peer answered before the client
// finished sending): what that read returns is kept for the new attempt,
// and its sender is told its body was replaced. A larger body is passed on
// and not kept, and so is one that would take the proxy over its bound on
// bytes kept (bound).
type keptBody struct {
	src   io.ReadCloser
	bound *retry.Bytes
	m     *metrics.Metrics // counts a body not kept for the bound

	mu       sync.Mutex
	buf      []byte
	held     int64 // bytes of bound held: cap(buf)
	over     bool  // not kept (too long or over the bound): no replay
	read     int   // bytes read from src
	eof      bool
	err      error       // src's read failure: sticky, no replay
	inflight bool        // a read of src is in progress
	readDone sync.Cond   // on mu: broadcast when a read of src returns
	live     *keptReader // the latest attempt's reader
	ended    bool        // the request is over: no more reads
}

// newKeptBody keeps src as it is read, within bound.
func newKeptBody(src io.ReadCloser, bound *retry.Bytes, m *metrics.Metrics) *keptBody {
	k := &keptBody{src: src, bound: bound, m: m}
	k.readDone.L = &k.mu
	return k
}

// keptReader is one attempt's view of a kept body.
type keptReader struct {
	k      *keptBody
	pos    int  // bytes given to this attempt
	closed bool // under k.mu: its sender is done, or a later attempt took over
}

// replayable reports whether a new attempt can be given the whole body.
func (k *keptBody) replayable() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return !k.over && k.err == nil && !k.ended
}

// reader starts an attempt's view of the body from its first byte; the
// previous attempt's reader reads no more.
func (k *keptBody) reader() io.ReadCloser {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.live != nil {
		k.live.closed = true
	}
	k.live = &keptReader{k: k}
	return k.live
}

func (r *keptReader) Read(p []byte) (int, error) {
	k := r.k
	k.mu.Lock()
	for {
		switch {
		case r.closed || k.ended:
			k.mu.Unlock()
			return 0, errBodyReplaced
		case r.pos < k.read:
			// Bytes an earlier attempt read come from the copy first: a
			// stream whose client waits for an answer before it sends
			// more must get them without waiting for more.
			n, err := r.fromCopy(p)
			k.mu.Unlock()
			return n, err
		case k.eof:
			k.mu.Unlock()
			return 0, io.EOF
		case k.err != nil:
			k.mu.Unlock()
			return 0, k.err
		case !k.inflight:
			return r.readSrc(p)
		}
		// An earlier attempt's sender is reading the client's body: what
		// it reads is kept, for this reader too.
		k.readDone.Wait()
	}
}

// Buffered tells what a Read would get now (forward.BufferedOf): the
// copy's bytes this attempt has yet to get, else what the client's body
// holds. A read of it in progress (another attempt's) might wait.
func (r *keptReader) Buffered() (int, bool) {
	k := r.k
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case r.closed || k.ended:
		return 0, true
	case r.pos < k.read:
		if k.buf == nil {
			return 0, true // errBodyNotKept
		}
		return k.read - r.pos, false
	case k.eof || k.err != nil:
		return 0, true
	case k.inflight:
		return 0, false
	}
	n, end, _ := forward.BufferedOf(k.src)
	return n, end
}

// fromCopy gives r the next bytes of the copy. Under mu.
func (r *keptReader) fromCopy(p []byte) (int, error) {
	k := r.k
	if k.buf == nil {
		return 0, errBodyNotKept
	}
	n := copy(p, k.buf[r.pos:])
	r.pos += n
	if k.over && r.pos == k.read {
		// Caught up with bytes kept past the bounds only for it.
		k.bound.Release(k.dropLocked())
	}
	return n, nil
}

// readSrc reads the client's body for r, keeping what it reads. Called
// under mu, which it releases during the read and on return.
func (r *keptReader) readSrc(p []byte) (int, error) {
	k := r.k
	k.inflight = true
	k.mu.Unlock()
	n, err := k.src.Read(p)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.inflight = false
	k.readDone.Broadcast()
	if n > 0 {
		// A replaced sender's bytes are the live attempt's next ones:
		// kept even past the bounds, until it has them.
		k.keep(p[:n], r.closed && !k.ended)
		k.read += n
	}
	switch {
	case err == io.EOF:
		k.eof = true
	case err != nil:
		k.err = err
	}
	if r.closed {
		return 0, errBodyReplaced
	}
	r.pos += n
	return n, err
}

// Close ends this attempt's reads. The client's body stays open for a
// later attempt; the request's end closes it (drop).
func (r *keptReader) Close() error {
	r.k.mu.Lock()
	r.closed = true
	r.k.mu.Unlock()
	return nil
}

// keep appends b to the copy, growing it within maxReplayBody and the
// bound; past either, the body can no longer be replayed (over) and the
// copy goes, unless mustKeep: b was read by a replaced sender and the
// live attempt has yet to get it, so it stays (past the bound by at most
// this read) until that attempt has caught up (fromCopy). Under mu.
func (k *keptBody) keep(b []byte, mustKeep bool) {
	if k.over && (!mustKeep || (k.buf == nil && k.read > 0)) {
		return
	}
	need := len(k.buf) + len(b)
	fits := !k.over && need <= maxReplayBody
	if fits && need > cap(k.buf) {
		c := min(max(2*cap(k.buf), need, 512), maxReplayBody)
		if k.bound.Acquire(int64(c - cap(k.buf))) {
			k.held += int64(c - cap(k.buf))
			nb := make([]byte, len(k.buf), c)
			copy(nb, k.buf)
			k.buf = nb
		} else {
			k.m.ReplayRefused()
			fits = false
		}
	}
	if !fits {
		k.over = true
		if !mustKeep {
			k.bound.Release(k.dropLocked())
			return
		}
	}
	k.buf = append(k.buf, b...)
}

// drop ends the request's use of the body and returns the bytes of the
// bound it held. A sender still blocked in a read of the client's body is
// released by closing it.
func (k *keptBody) drop() int64 {
	k.mu.Lock()
	k.ended = true
	reading := k.inflight
	held := k.dropLocked()
	k.mu.Unlock()
	if reading {
		// Not under mu: a body's Close may wait for the read to return,
		// and the read's end takes mu.
		_ = k.src.Close()
	}
	return held
}

func (k *keptBody) dropLocked() int64 {
	held := k.held
	k.over, k.buf, k.held = true, nil, 0
	return held
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
