package meshh2

import "sync"

// A body's unread bytes are kept in pooled chunks rather than a buffer
// grown per stream, which is garbage when the stream ends (the GC's work
// in the 1 MiB bodies scenario of bench/meshbench). Chunk sizes go from
// minChunk to maxChunk, each new chunk at least as large as what is
// buffered already (as bytes.Buffer grows): the memory a body pins stays
// within about twice its unread bytes plus minChunk, so a peer sending one
// byte on each of thousands of streams pins little more than it sent.
const (
	minChunk    = 512
	maxChunk    = 16 << 10 // one DATA frame of the default size
	chunkKinds  = 6        // 512 B << 0..5
	maxChunkIdx = chunkKinds - 1
)

// chunkPools[i] holds *[]byte of len minChunk<<i; shared by every
// connection.
var chunkPools [chunkKinds]sync.Pool

// chunkIndex is the pool of the smallest chunk of at least n bytes
// (maxChunk's for more).
func chunkIndex(n int) int {
	i := 0
	for i < maxChunkIdx && minChunk<<i < n {
		i++
	}
	return i
}

func getChunk(n int) *[]byte {
	i := chunkIndex(n)
	if p, ok := chunkPools[i].Get().(*[]byte); ok {
		return p
	}
	b := make([]byte, minChunk<<i)
	return &b
}

func putChunk(p *[]byte) { chunkPools[chunkIndex(len(*p))].Put(p) }

// chunks is a FIFO byte queue in pooled chunks; not safe for concurrent
// use (the pipe's mutex guards it). Every chunk but the last is full.
type chunks struct {
	q    []*[]byte // q[h:] hold the bytes
	h    int
	r, w int // read offset in q[h], write offset in q[len(q)-1]
	n    int // bytes buffered
}

// Len is the number of unread bytes.
func (c *chunks) Len() int { return c.n }

func (c *chunks) write(b []byte) {
	for len(b) > 0 {
		if len(c.q) == c.h || c.w == len(*c.q[len(c.q)-1]) {
			c.q = append(c.q, getChunk(max(c.n, len(b))))
			c.w = 0
		}
		k := copy((*c.q[len(c.q)-1])[c.w:], b)
		c.w += k
		c.n += k
		b = b[k:]
	}
}

// read copies up to len(p) unread bytes into p and returns how many.
func (c *chunks) read(p []byte) int {
	done := 0
	for done < len(p) && c.n > 0 {
		chunk := *c.q[c.h]
		end := len(chunk)
		if len(c.q)-c.h == 1 {
			end = c.w
		}
		k := copy(p[done:], chunk[c.r:end])
		c.r += k
		c.n -= k
		done += k
		if c.r == end {
			c.pop()
		}
	}
	return done
}

// pop returns the first chunk to its pool; the queue's slice is reused
// from its start once empty, and compacted when mostly consumed (a long
// body read slowly would otherwise grow it without end).
func (c *chunks) pop() {
	putChunk(c.q[c.h])
	c.q[c.h] = nil
	c.h++
	c.r = 0
	switch {
	case c.h == len(c.q):
		c.q, c.h, c.w = c.q[:0], 0, 0
	case c.h >= 32 && c.h > len(c.q)/2:
		k := copy(c.q, c.q[c.h:])
		clear(c.q[k:])
		c.q, c.h = c.q[:k], 0
	}
}

// reset drops every unread byte and returns the chunks.
func (c *chunks) reset() {
	for c.h < len(c.q) {
		c.pop()
	}
	c.n = 0
}
