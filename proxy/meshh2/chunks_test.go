package meshh2

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// chunks behaves as a bytes.Buffer for any interleaving of writes and
// reads of any sizes, across chunk boundaries.
func TestChunksAsBuffer(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, 7, minChunk - 1, minChunk + 1, maxChunk - 1, maxChunk, maxChunk + 1, 3*maxChunk + 5}
	for round := range 200 {
		var c chunks
		var ref bytes.Buffer
		for step := range 40 {
			if rng.IntN(2) == 0 {
				b := make([]byte, sizes[rng.IntN(len(sizes))])
				for i := range b {
					b[i] = byte(rng.Uint32())
				}
				c.write(b)
				ref.Write(b)
			} else {
				n := sizes[rng.IntN(len(sizes))]
				got, want := make([]byte, n), make([]byte, n)
				gn := c.read(got)
				wn, _ := ref.Read(want)
				if gn != wn || !bytes.Equal(got[:gn], want[:wn]) {
					t.Fatalf("round %d step %d: read %d bytes, want %d (or different bytes)", round, step, gn, wn)
				}
			}
			if c.Len() != ref.Len() {
				t.Fatalf("round %d step %d: Len %d, want %d", round, step, c.Len(), ref.Len())
			}
		}
		c.reset()
		if c.Len() != 0 || c.read(make([]byte, 10)) != 0 || len(c.q) != 0 {
			t.Fatalf("round %d: not empty after reset", round)
		}
	}
}

// One byte on each of many streams pins a small chunk each, not a frame's
// worth: a peer cannot make the proxy hold far more than it sent.
func TestChunksMemoryFollowsBytes(t *testing.T) {
	tests := []struct {
		name        string
		writes      []int
		maxCapacity int
	}{
		{"one byte", []int{1}, minChunk},
		{"just over the smallest chunk", []int{minChunk + 1}, 2 * minChunk},
		{"a frame", []int{maxChunk}, maxChunk},
		{"a frame and a byte", []int{maxChunk, 1}, 2 * maxChunk},
		{"tiny writes", []int{1, 1, 1, 1, 1, 1, 1, 1}, minChunk},
		{"a megabyte in frames", slicesRepeat(maxChunk, 64), 64 * maxChunk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c chunks
			sent := 0
			for _, n := range tt.writes {
				c.write(make([]byte, n))
				sent += n
			}
			capacity := 0
			for _, p := range c.q[c.h:] {
				capacity += len(*p)
			}
			if capacity > tt.maxCapacity || capacity > 2*sent+minChunk {
				t.Fatalf("%d bytes buffered pin %d bytes of chunks, want at most %d", sent, capacity, min(tt.maxCapacity, 2*sent+minChunk))
			}
			c.reset()
		})
	}
}

func slicesRepeat(v, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}
