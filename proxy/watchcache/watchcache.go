// Package watchcache keeps the proxy's control-plane watches whose every
// message is a whole answer (Policy.WatchInbound per port,
// Destination.GetRoutes per authority): one stream per key, shared by every
// caller; the last good answer kept while the controller is unreachable;
// reconnection with jittered exponential backoff; and an idle sweep that
// closes the streams of keys nobody asked for. proxy/discovery's Resolver
// does the same for Destination.Get, whose messages are diffs.
package watchcache

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Defaults of Config's zero values.
const (
	DefaultIdleTimeout = 10 * time.Minute
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
)

// idleTicks: the sweeper runs IdleTimeout/idleTicks apart, and a key unused
// for idleTicks sweeps is closed.
const idleTicks = 4

// Recv returns the next message of a stream, or the error that ended it.
type Recv[V any] func() (V, error)

// Config configures a Cache. Open is required; Service names it in metrics
// (service label) and logs.
type Config[K comparable, V proto.Message] struct {
	Service string
	// Open starts the stream of key, bound to ctx.
	Open func(ctx context.Context, key K) (Recv[V], error)
	// Check validates a message; one it refuses is counted
	// (result="invalid"), logged and skipped: the last good answer stays.
	Check func(key K, v V) error
	// Describe returns the log attributes of an answer (logged at info
	// when the answer of a key changes).
	Describe func(v V) []any
	// Pinned keys are watched from New on and never swept (the ports the
	// configuration names).
	Pinned []K
	// MaxWatches bounds the keys watched besides Pinned (0: no bound).
	// Keys come from traffic, which a stranger controls: beyond the bound
	// a new key gets no watch and Get reports no answer.
	MaxWatches  int
	IdleTimeout time.Duration // default DefaultIdleTimeout
	// Backoff bounds between attempts to open a broken stream; defaults
	// DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	Metrics                *metrics.ControlPlane // nil: unregistered metrics
	Logger                 *slog.Logger
	KeyAttr                string // the key's log attribute name; default "key"
}

// Cache is safe for concurrent use.
type Cache[K comparable, V proto.Message] struct {
	cfg    Config[K, V]
	log    *slog.Logger
	limit  *ratelog.Limiter
	m      *metrics.ControlPlane
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.RWMutex
	entries map[K]*entry[V]
	learned int // entries not pinned
	closed  bool
	epoch   atomic.Int64 // advanced by the sweeper; Get and Observe stamp entries with it
}

// entry is the watch of one key.
type entry[V proto.Message] struct {
	pinned   bool
	lastUsed atomic.Int64
	cancel   context.CancelFunc

	mu      sync.Mutex
	val     V
	has     bool          // an answer was received (ever)
	failed  bool          // the stream failed while !has
	changed chan struct{} // closed and replaced when has or failed change
}

// New starts the watches of cfg.Pinned. Call Close to stop every stream.
func New[K comparable, V proto.Message](cfg Config[K, V]) *Cache[K, V] {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.KeyAttr == "" {
		cfg.KeyAttr = "key"
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = metrics.NewControlPlane(nil, cfg.Service)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache[K, V]{
		cfg: cfg, log: cfg.Logger.With("service", cfg.Service), m: cfg.Metrics,
		ctx: ctx, cancel: cancel, entries: make(map[K]*entry[V]),
	}
	c.limit = ratelog.New(c.log, 0)
	c.mu.Lock()
	for _, k := range cfg.Pinned {
		if c.entries[k] == nil {
			c.openLocked(k, true)
		}
	}
	c.mu.Unlock()
	c.wg.Add(1)
	go c.sweepIdle()
	return c
}

// Get returns the controller's answer for key, starting its watch on first
// use and waiting, bounded by ctx, for the first message. Once a key has an
// answer Get returns it at once, also while its stream reconnects. ok is
// false when there is no answer: the stream failed before its first
// message (until one arrives), ctx ended first, the watch bound is reached,
// or the Cache is closed. The answer is shared: callers must not modify it.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (v V, ok bool) {
	e := c.use(key)
	if e == nil {
		return v, false
	}
	for {
		e.mu.Lock()
		val, has, failed, changed := e.val, e.has, e.failed, e.changed
		e.mu.Unlock()
		switch {
		case has:
			return val, true
		case failed:
			return v, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return v, false
		case <-c.ctx.Done():
			return v, false
		}
	}
}

// Observe starts watching key if it is not watched, and marks it used,
// without waiting: for paths (accepting a connection) that must not block.
func (c *Cache[K, V]) Observe(key K) { c.use(key) }

// Watched reports whether key has a watch now (Get on a key without one,
// over MaxWatches or after Close, never gets an answer).
func (c *Cache[K, V]) Watched(key K) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return !c.closed && c.entries[key] != nil
}

// Len returns the number of keys watched.
func (c *Cache[K, V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}

// use returns key's entry, stamped used, opening it if needed; nil when
// closed or over the bound.
func (c *Cache[K, V]) use(key K) *entry[V] {
	epoch := c.epoch.Load()
	c.mu.RLock()
	e, closed := c.entries[key], c.closed
	if e != nil && e.lastUsed.Load() != epoch {
		// Under the read lock, so the sweeper (write lock) cannot close
		// the entry between this stamp and its use.
		e.lastUsed.Store(epoch)
	}
	c.mu.RUnlock()
	if closed {
		return nil
	}
	if e != nil {
		return e
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	if e = c.entries[key]; e != nil {
		e.lastUsed.Store(c.epoch.Load())
		return e
	}
	if c.cfg.MaxWatches > 0 && c.learned >= c.cfg.MaxWatches {
		c.limit.Log(c.ctx, slog.LevelWarn, "watch_limit", "watch limit reached: key not watched, the default applies",
			c.cfg.KeyAttr, key, "max_watches", c.cfg.MaxWatches)
		return nil
	}
	return c.openLocked(key, false)
}

// openLocked starts the watch of key; c.mu is held.
func (c *Cache[K, V]) openLocked(key K, pinned bool) *entry[V] {
	ctx, cancel := context.WithCancel(c.ctx)
	e := &entry[V]{pinned: pinned, cancel: cancel, changed: make(chan struct{})}
	e.lastUsed.Store(c.epoch.Load())
	c.entries[key] = e
	if !pinned {
		c.learned++
	}
	c.m.Watches(len(c.entries))
	c.wg.Add(1)
	go c.watch(ctx, key, e)
	return e
}

// Close stops every stream and waits for them to end.
func (c *Cache[K, V]) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	c.wg.Wait()
}

func (c *Cache[K, V]) sweepIdle() {
	defer c.wg.Done()
	t := time.NewTicker(max(c.cfg.IdleTimeout/idleTicks, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.sweep(c.epoch.Add(1))
	}
}

// sweep closes the watches not used for idleTicks epochs before epoch.
func (c *Cache[K, V]) sweep(epoch int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, e := range c.entries {
		if !e.pinned && epoch-e.lastUsed.Load() > idleTicks {
			e.cancel()
			delete(c.entries, key)
			c.learned--
			c.log.Debug("watch idle, stream closed", c.cfg.KeyAttr, key)
		}
	}
	c.m.Watches(len(c.entries))
}
