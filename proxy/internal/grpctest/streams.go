package grpctest

import (
	"context"
	"slices"
	"sync"
)

// Streams is the server side of a test's server-streaming RPC keyed by K
// (a port, an authority): it counts the streams opened and active per key,
// and fans the messages Push sends out to the active streams of a key.
type Streams[K comparable, V any] struct {
	mu     sync.Mutex
	opened map[K]int
	active map[K]int
	chans  map[K][]chan V
}

// NewStreams returns an empty Streams.
func NewStreams[K comparable, V any]() *Streams[K, V] {
	return &Streams[K, V]{opened: map[K]int{}, active: map[K]int{}, chans: map[K][]chan V{}}
}

// Serve runs one stream of key: it sends first, then every pushed
// message, until ctx ends (nil) or send fails (its error).
func (s *Streams[K, V]) Serve(ctx context.Context, key K, first []V, send func(V) error) error {
	ch := make(chan V, 16)
	s.mu.Lock()
	s.opened[key]++
	s.active[key]++
	s.chans[key] = append(s.chans[key], ch)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.active[key]--
		s.chans[key] = slices.DeleteFunc(s.chans[key], func(c chan V) bool { return c == ch })
		s.mu.Unlock()
	}()
	for _, v := range first {
		if err := send(v); err != nil {
			return err
		}
	}
	for {
		select {
		case v := <-ch:
			if err := send(v); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// Push sends v to every active stream of key.
func (s *Streams[K, V]) Push(key K, v V) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range s.chans[key] {
		ch <- v
	}
}

// Counts returns how many streams of key were opened, and are active.
func (s *Streams[K, V]) Counts(key K) (opened, active int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opened[key], s.active[key]
}
