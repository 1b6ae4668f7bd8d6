package status

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// TestQueueRetriesThenSucceeds: a key whose sync fails is retried until
// it succeeds, and a key queued while waiting is synced once.
func TestQueueRetriesThenSucceeds(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	done := make(chan struct{})
	q := NewQueue("test", func(_ context.Context, key string) error {
		mu.Lock()
		defer mu.Unlock()
		calls[key]++
		if key == "flaky" && calls[key] < 3 {
			return errors.New("conflict")
		}
		if key == "flaky" {
			close(done)
		}
		return nil
	}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { Always{}.Run(ctx, func(ctx context.Context) { q.Run(ctx, 2) }); close(stopped) }()
	q.Add("steady")
	q.Add("flaky")
	start := time.Now()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the failing key was not retried to success")
	}
	t.Logf("flaky key succeeded after %v", time.Since(start))
	cancel()
	<-stopped
	mu.Lock()
	defer mu.Unlock()
	if calls["flaky"] != 3 || calls["steady"] != 1 {
		t.Errorf("calls %v, want flaky 3, steady 1", calls)
	}
	if q.Synced() != 4 {
		t.Errorf("Synced() = %d, want 4", q.Synced())
	}
}
