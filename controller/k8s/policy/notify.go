package policy

import "sync"

// notifier is a copy of controller/k8s/endpoints' notifier until the shared
// one (issue 11) lands; here a topic is a namespace ("ns/shop").
//
// notifier wakes streams by topic: a topic is the name of something a
// destination depends on ("svc/ns/name", "ip/10.0.0.1"). A waiter takes
// the topic's current channel; a notification closes it and forgets the
// topic, so the next waiter gets a fresh one. Topics nobody waits on cost
// nothing: they are dropped when their last waiter releases them, so
// streams for names that never exist cannot grow the map without bound.
type notifier struct {
	mu     sync.Mutex
	topics map[string]*topic
}

type topic struct {
	ch   chan struct{}
	refs int
}

func newNotifier() *notifier { return &notifier{topics: map[string]*topic{}} }

// acquire returns the channel of a topic and a release func (idempotent).
func (n *notifier) acquire(key string) (<-chan struct{}, func()) {
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

// notify closes the channels of the given topics.
func (n *notifier) notify(keys ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, k := range keys {
		if t := n.topics[k]; t != nil {
			close(t.ch)
			delete(n.topics, k)
		}
	}
}
