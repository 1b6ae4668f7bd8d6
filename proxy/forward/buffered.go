package forward

import "io"

// buffered is implemented by bodies that can tell, without blocking, what
// a Read would get now (meshh2's stream bodies, and the stages' body
// wrappers, which ask what they wrap): see meshh2.Buffered.
type buffered interface {
	Buffered() (n int, end bool)
}

// BufferedOf asks r what a Read would get now: n bytes at once, and
// whether the body ends after them. ok is false when r cannot tell (a
// Read might block).
func BufferedOf(r io.Reader) (n int, end, ok bool) {
	b, ok := r.(buffered)
	if !ok {
		return 0, false, false
	}
	n, end = b.Buffered()
	return n, end, true
}

// wouldWait reports whether a Read of r might block: only then must what
// was written before it be flushed for the peer to see it now.
func wouldWait(r io.Reader) bool {
	n, end, ok := BufferedOf(r)
	return !ok || n == 0 && !end
}
