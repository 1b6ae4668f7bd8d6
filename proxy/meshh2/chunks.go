package meshh2

import "sync"

// chunkSize is the size of the pooled chunks a body's unread bytes are
// kept in: one DATA frame of the default size.
const chunkSize = 16 << 10

// chunkPool holds *[chunkSize]byte; shared by every connection, so a body
// of a megabyte borrows chunks and returns them as it is read, instead of
// growing a buffer of its own that becomes garbage when the stream ends
// (the GC's work in the 1 MiB bodies scenario of bench/meshbench).
var chunkPool = sync.Pool{New: func() any { return new([chunkSize]byte) }}

// chunks is a FIFO byte queue in pooled chunks; not safe for concurrent
// use (the pipe's mutex guards it).
type chunks struct {
	q    []*[chunkSize]byte // q[h:] hold the bytes
	h    int
	r, w int // read offset in q[h], write offset in q[len(q)-1]
	n    int // bytes buffered
}

// Len is the number of unread bytes.
func (c *chunks) Len() int { return c.n }

func (c *chunks) write(b []byte) {
	for len(b) > 0 {
		if len(c.q) == c.h || c.w == chunkSize {
			c.q = append(c.q, chunkPool.Get().(*[chunkSize]byte))
			c.w = 0
		}
		k := copy(c.q[len(c.q)-1][c.w:], b)
		c.w += k
		c.n += k
		b = b[k:]
	}
}

// read copies up to len(p) unread bytes into p and returns how many.
func (c *chunks) read(p []byte) int {
	done := 0
	for done < len(p) && c.n > 0 {
		end := chunkSize
		if len(c.q)-c.h == 1 {
			end = c.w
		}
		k := copy(p[done:], c.q[c.h][c.r:end])
		c.r += k
		c.n -= k
		done += k
		if c.r == end {
			c.pop()
		}
	}
	return done
}

// pop returns the first chunk to the pool; the queue's slice is reused
// from its start once empty.
func (c *chunks) pop() {
	chunkPool.Put(c.q[c.h])
	c.q[c.h] = nil
	c.h++
	c.r = 0
	if c.h == len(c.q) {
		c.q, c.h, c.w = c.q[:0], 0, 0
	}
}

// reset drops every unread byte and returns the chunks.
func (c *chunks) reset() {
	for c.h < len(c.q) {
		c.pop()
	}
	c.n = 0
}
