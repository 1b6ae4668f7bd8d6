// Package ratelog logs through slog at most once per cause per interval, so
// that a misbehaving peer cannot flood a process's output: the errors the
// proxies render, library log lines (x/net/http2, net/http, grpc-go) routed
// into slog, and anything else whose rate a stranger controls.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is how often one cause may be logged.
const DefaultInterval = time.Minute

// maxCauses bounds the memory a flood of distinct causes can take; causes
// past it share one slot.
const maxCauses = 1024

// overflowCause is the slot of causes past maxCauses.
const overflowCause = "(other)"

// Limiter logs one line per cause per interval and counts the lines it
// held back; the next line of that cause says how many (suppressed=N).
type Limiter struct {
	log      *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu     sync.Mutex
	causes map[string]*causeState
}

type causeState struct {
	last       time.Time
	suppressed int
}

// New returns a Limiter logging to log (nil: discard) at most once per
// interval per cause (<= 0: DefaultInterval).
func New(log *slog.Logger, interval time.Duration) *Limiter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Limiter{log: log, interval: interval, now: time.Now, causes: make(map[string]*causeState)}
}

// Logger is the logger lines go to.
func (l *Limiter) Logger() *slog.Logger { return l.log }

// Log logs msg with args at level unless cause was logged less than the
// interval ago. It reports whether the line was written.
func (l *Limiter) Log(ctx context.Context, level slog.Level, cause, msg string, args ...any) bool {
	if !l.log.Enabled(ctx, level) {
		return false
	}
	n, ok := l.allow(cause)
	if !ok {
		return false
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	l.log.Log(ctx, level, msg, args...)
	return true
}

// allow decides for one line of cause and returns how many lines of it
// were held back since the last one written.
func (l *Limiter) allow(cause string) (int, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.causes[cause]
	if st == nil {
		if len(l.causes) >= maxCauses {
			cause = overflowCause
			st = l.causes[cause]
		}
		if st == nil {
			st = &causeState{}
			l.causes[cause] = st
			st.last = now
			return 0, true
		}
	}
	if now.Sub(st.last) < l.interval {
		st.suppressed++
		return 0, false
	}
	n := st.suppressed
	st.last, st.suppressed = now, 0
	return n, true
}
