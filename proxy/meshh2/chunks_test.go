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
	sizes := []int{0, 1, 7, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5}
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
