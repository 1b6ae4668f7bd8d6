// Package informerstest helps tests run informers over client-go's fake
// clientsets (the core one and the generated ones alike).
package informerstest

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	k8stesting "k8s.io/client-go/testing"
)

// Fake is a fake clientset: its reactors and its object tracker.
type Fake interface {
	PrependWatchReactor(resource string, reaction k8stesting.WatchReactionFunc)
	Tracker() k8stesting.ObjectTracker
}

// CountWatches makes the fakes count the watches their informers open;
// wait(n) returns once n are open (failing the test after 30 s). A fake
// cannot replay events from a resource version: a change made between an
// informer's list and its watch is lost, so tests change objects only
// once every informer watches.
func CountWatches(t testing.TB, fakes ...Fake) (wait func(n int)) {
	watching := make(chan struct{}, 64)
	for _, f := range fakes {
		f.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
			w, err := f.Tracker().Watch(action.GetResource(), action.GetNamespace())
			watching <- struct{}{}
			return true, w, err
		})
	}
	return func(n int) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for range n {
			select {
			case <-watching:
			case <-deadline:
				t.Fatal("informers did not start watching")
			}
		}
	}
}
