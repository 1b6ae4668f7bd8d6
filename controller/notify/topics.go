// Package notify is how every streaming service of the controller learns
// that an answer may have changed, and the one stream loop they share.
//
// Topics wakes waiters by name, level-triggered: a waiter takes a topic's
// channel before it reads the state it depends on, and any later change
// closes that channel. An update can therefore never be missed (the
// channel was taken first), and a burst of updates costs one wake-up: the
// waiter reads the latest state, never a queue of intermediate ones.
// Nothing is buffered per waiter, so a slow or stalled stream holds no
// memory and blocks no one.
//
// Watch is the loop around it: resolve (taking the channel), send what
// changed, wait, resolve again, until the client leaves or the controller
// stops.
package notify

import "sync"

// Topics wakes waiters by topic: a topic is the name of something an
// answer depends on ("svc/ns/name", "ip/10.0.0.1"). A waiter takes the
// topic's current channel; a notification closes it and forgets the
// topic, so the next waiter gets a fresh one. Topics nobody waits on cost
// nothing: they are dropped when their last waiter releases them, so
// streams for names that never exist cannot grow the map without bound.
// The zero value is not usable; call NewTopics.
type Topics struct {
	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	ch   chan struct{}
	refs int
}

// NewTopics returns an empty set of topics.
func NewTopics() *Topics { return &Topics{topics: map[string]*topic{}} }

// Acquire returns the channel of a topic and a release func (idempotent)
// to call once the caller stops waiting on it.
func (n *Topics) Acquire(key string) (<-chan struct{}, func()) {
	n.mu.Lock()
	t := n.topics[key]
	if t == nil {
		t = &topic{ch: make(chan struct{})}
		n.topics[key] = t
	}
	t.refs++
	n.mu.Unlock()
	var once sync.Once
	return t.ch, func() {
		once.Do(func() {
			n.mu.Lock()
			t.refs--
			if t.refs == 0 && n.topics[key] == t {
				delete(n.topics, key)
			}
			n.mu.Unlock()
		})
	}
}

// Notify closes the channels of the given topics. It never blocks on a
// waiter: informer handlers call it inline.
func (n *Topics) Notify(keys ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range keys {
		if t := n.topics[k]; t != nil {
			close(t.ch)
			delete(n.topics, k)
		}
	}
}

// NotifyAll closes every channel, for changes too broad to route (a
// node's zone, a reloaded store file).
func (n *Topics) NotifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k, t := range n.topics {
		close(t.ch)
		delete(n.topics, k)
	}
}

// Len is the number of topics being waited on.
func (n *Topics) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.topics)
}
