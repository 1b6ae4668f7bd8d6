package watchcache

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/protobuf/proto"
)

// jitter spreads reconnections of many proxies (and keys) after a
// controller restart: each wait is the backoff ±25 %.
const jitter = 0.25

// backoff is the wait between attempts to open a broken stream: it doubles
// from min up to max, and starts over after a stream that got a message.
type backoff struct {
	min, max, next time.Duration
}

func newBackoff(lo, hi time.Duration) *backoff { return &backoff{min: lo, max: hi, next: lo} }

// wait returns the next wait (jittered by r in [0,1)) and doubles the base.
func (b *backoff) wait(r float64) time.Duration {
	d := time.Duration(float64(b.next) * (1 + jitter*(2*r-1)))
	b.next = min(b.next*2, b.max)
	return d
}

func (b *backoff) reset() { b.next = b.min }

// watch runs the stream of one key until its context ends.
func (c *Cache[K, V]) watch(ctx context.Context, key K, e *entry[V]) {
	defer c.wg.Done()
	// A watch swept or closed before its first answer releases its waiters.
	defer e.noAnswer()
	bo := newBackoff(c.cfg.MinBackoff, c.cfg.MaxBackoff)
	warned := false
	for ctx.Err() == nil {
		got, err := c.stream(ctx, key, e)
		if ctx.Err() != nil {
			return
		}
		c.m.StreamError()
		if got {
			bo.reset()
			warned = false
		}
		e.noAnswer()
		wait := bo.wait(rand.Float64())
		level := slog.LevelDebug
		if !warned {
			// Once per outage and key: later attempts are at debug.
			level, warned = slog.LevelWarn, true
		}
		c.log.Log(ctx, level, "control-plane stream failed; keeping the last answer",
			c.cfg.KeyAttr, key, "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// noAnswer records that the stream ended before a first answer: callers
// waiting for one get none and use their default until an answer arrives.
func (e *entry[V]) noAnswer() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.has && !e.failed {
		e.failed = true
		close(e.changed)
		e.changed = make(chan struct{})
	}
}

// stream runs one stream until it fails. got reports whether a message
// arrived.
func (c *Cache[K, V]) stream(ctx context.Context, key K, e *entry[V]) (got bool, err error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recv, err := c.cfg.Open(sctx, key)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	defer func() {
		if got {
			c.m.StreamDown()
		}
	}()
	for {
		v, err := recv()
		if err != nil {
			return got, fmt.Errorf("stream: %w", err)
		}
		if !got {
			// Healthy from its first message on, before that message
			// wakes Get: a caller that got an answer sees connected=1.
			got = true
			c.m.StreamUp()
		}
		c.apply(key, e, v)
	}
}

// apply installs one message as the key's answer, unless Check refuses it.
func (c *Cache[K, V]) apply(key K, e *entry[V], v V) {
	if c.cfg.Check != nil {
		if err := c.cfg.Check(key, v); err != nil {
			c.m.Update(false, time.Now())
			c.limit.Log(c.ctx, slog.LevelWarn, "invalid", "invalid answer from the controller refused; keeping the last good one",
				c.cfg.KeyAttr, key, "err", err)
			return
		}
	}
	c.m.Update(true, time.Now())
	e.mu.Lock()
	same := e.has && proto.Equal(e.val, v)
	first := !e.has
	e.val, e.has, e.failed = v, true, false
	if first {
		close(e.changed)
		e.changed = make(chan struct{})
	}
	e.mu.Unlock()
	if same {
		// A reconnection's first message repeats the answer: no news.
		c.log.Debug("control-plane answer unchanged", c.cfg.KeyAttr, key)
		return
	}
	attrs := []any{c.cfg.KeyAttr, key, "first", first}
	if c.cfg.Describe != nil {
		attrs = append(attrs, c.cfg.Describe(v)...)
	}
	c.log.Info("control-plane answer", attrs...)
}
