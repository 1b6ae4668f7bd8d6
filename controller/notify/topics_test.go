package notify

import (
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestTopics(t *testing.T) {
	for _, tc := range []struct {
		name    string
		acquire []string
		notify  func(*Topics)
		woken   []bool // per acquired channel
		left    int    // topics left after the notification
	}{
		{"named topic only", []string{"a", "b"}, func(n *Topics) { n.Notify("a") }, []bool{true, false}, 1},
		{"two waiters share a topic", []string{"a", "a", "b"}, func(n *Topics) { n.Notify("a") }, []bool{true, true, false}, 1},
		{"unknown topic is a no-op", []string{"a"}, func(n *Topics) { n.Notify("zzz") }, []bool{false}, 1},
		{"several at once", []string{"a", "b", "c"}, func(n *Topics) { n.Notify("a", "c") }, []bool{true, false, true}, 1},
		{"all", []string{"a", "b"}, func(n *Topics) { n.NotifyAll() }, []bool{true, true}, 0},
		{"nothing", []string{"a", "b"}, func(*Topics) {}, []bool{false, false}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := NewTopics()
			var chs []<-chan struct{}
			var rels []func()
			for _, k := range tc.acquire {
				ch, rel := n.Acquire(k)
				chs = append(chs, ch)
				rels = append(rels, rel)
			}
			tc.notify(n)
			for i, ch := range chs {
				if got := closed(ch); got != tc.woken[i] {
					t.Errorf("waiter %d on %q woken = %v, want %v", i, tc.acquire[i], got, tc.woken[i])
				}
			}
			if got := n.Len(); got != tc.left {
				t.Errorf("Len after notify = %d, want %d", got, tc.left)
			}
			for _, rel := range rels {
				rel()
				rel() // idempotent
			}
			if got := n.Len(); got != 0 {
				t.Errorf("Len after every release = %d, want 0", got)
			}
		})
	}
}

// A waiter that takes a topic after a notification gets a fresh channel,
// and releasing a stale one does not drop the fresh topic.
func TestTopicsStaleRelease(t *testing.T) {
	n := NewTopics()
	old, relOld := n.Acquire("a")
	n.Notify("a")
	cur, relCur := n.Acquire("a")
	if !closed(old) || closed(cur) {
		t.Fatalf("old closed %v (want true), fresh closed %v (want false)", closed(old), closed(cur))
	}
	relOld()
	if n.Len() != 1 {
		t.Fatalf("releasing the stale channel dropped the fresh topic: Len = %d", n.Len())
	}
	n.Notify("a")
	if !closed(cur) {
		t.Fatal("fresh channel not woken")
	}
	relCur()
}
