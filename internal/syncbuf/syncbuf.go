// Package syncbuf is a bytes buffer safe for concurrent use: the log sink
// that a test shares with the goroutines of the server it logs (five test
// packages had their own copy).
package syncbuf

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer whose String may be read while others write.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
