package meshh2

import "io"

// Buffered is a body that can tell, without blocking, what a Read would
// get now: n bytes at once, and whether the body ends after them (a Read
// past them returns io.EOF or an error at once). The stream bodies of
// this package implement it, and so do the proxy's body wrappers, by
// asking what they wrap.
//
// Writers use it to put what is already there in one write: a request
// whose whole body has arrived goes out with its HEADERS as one record,
// and a response is flushed only when its next Read would wait, so
// HEADERS, DATA and trailers that arrived together leave together.
type Buffered interface {
	Buffered() (n int, end bool)
}

// bufferedOf asks r what a Read would get now; ok is false when r cannot
// tell (it might block). (forward.BufferedOf is the same for the proxy's
// stages; this package imports none of them.)
func bufferedOf(r io.Reader) (n int, end, ok bool) {
	b, ok := r.(Buffered)
	if !ok {
		return 0, false, false
	}
	n, end = b.Buffered()
	return n, end, true
}

// buffered is the pipe's answer to Buffered.
func (p *pipe) buffered() (int, bool) {
	if p == nil {
		return 0, true // no body
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken != nil {
		return 0, true
	}
	return p.buf.Len(), p.err != nil
}

// Buffered implements Buffered for a response body.
func (b *clientBody) Buffered() (int, bool) { return b.cs.in.buffered() }

// Buffered implements Buffered for a request body. A body that sends 100
// Continue on its first read is not there yet.
func (b *serverBody) Buffered() (int, bool) {
	if b.cont != nil {
		return 0, false
	}
	return b.ss.in.buffered()
}
