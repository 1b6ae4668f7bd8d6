// Package status runs the controller's status writers the way client-go's
// sample-controller does: informer events put keys on a rate-limited work
// queue, workers take one key at a time (never the same key twice at
// once) and call a sync handler that reads the current objects from the
// listers and writes status only when it differs. A failed sync is
// retried with per-key exponential backoff, then dropped (the next event
// or resync brings the key back).
//
// Only one replica may write status: Run it under an Elector. Always is
// the single-replica one; an HA controller runs it on the leader only.
package status

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"k8s.io/client-go/util/workqueue"
)

// maxRetries bounds the retries of one key before it is dropped.
const maxRetries = 10

// SyncFunc brings the status of the object named by key up to date.
type SyncFunc func(ctx context.Context, key string) error

// Queue is a rate-limited work queue with a sync handler.
type Queue struct {
	q      workqueue.TypedRateLimitingInterface[string]
	sync   SyncFunc
	log    *slog.Logger
	synced atomic.Int64
}

// NewQueue makes a queue named name (for logs) calling sync per key.
func NewQueue(name string, sync SyncFunc, log *slog.Logger) *Queue {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Queue{
		q: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: name}),
		sync: sync,
		log:  log.With("queue", name),
	}
}

// Add queues a key; a key already waiting is not queued twice.
func (q *Queue) Add(key string) { q.q.Add(key) }

// Synced is how many syncs have finished, successful or not (tests wait
// on it to know the queue has caught up).
func (q *Queue) Synced() int64 { return q.synced.Load() }

// Run works the queue with the given number of workers until ctx is
// done, then shuts the queue down and waits for the workers.
func (q *Queue) Run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range max(1, workers) {
		wg.Go(func() {
			for q.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	q.q.ShutDown()
	wg.Wait()
}

// next processes one key; false once the queue is shut down.
func (q *Queue) next(ctx context.Context) bool {
	key, shutdown := q.q.Get()
	if shutdown {
		return false
	}
	defer q.q.Done(key)
	err := q.sync(ctx, key)
	q.synced.Add(1)
	switch {
	case err == nil:
		q.q.Forget(key)
	case ctx.Err() != nil:
	case q.q.NumRequeues(key) < maxRetries:
		q.log.Debug("status sync failed; retrying", "key", key, "err", err)
		q.q.AddRateLimited(key)
	default:
		q.log.Warn("status sync failed; dropped until the object changes", "key", key, "err", err)
		q.q.Forget(key)
	}
	return true
}

// Elector runs lead while this replica is the one that writes status.
// lead's context ends when leadership is lost or ctx is done.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context))
}

// Always is the Elector of a single replica: it always leads.
type Always struct{}

// Run calls lead at once.
func (Always) Run(ctx context.Context, lead func(ctx context.Context)) { lead(ctx) }
