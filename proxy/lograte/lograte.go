// Package lograte limits log lines a remote party can cause: at most one
// line per key (e.g. peer and cause) per interval, so a hostile peer cannot
// flood the proxy's log, while the first occurrence is always seen.
package lograte

import (
	"sync"
	"time"
)

// MaxKeys bounds the memory a peer can make the limiter hold by varying
// its key; past it, keys older than the interval are dropped, and if none
// is, new keys are not logged until one expires.
const MaxKeys = 4096

// Limiter decides whether a keyed event may be logged now.
type Limiter struct {
	Every time.Duration    // default one minute
	Now   func() time.Time // default time.Now

	mu   sync.Mutex
	last map[string]time.Time
	// suppressed counts events not logged per key since its last line.
	suppressed map[string]int
}

// Allow reports whether an event with key may be logged now, and how many
// events of that key were suppressed since its previous line.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := l.now()
	every := l.Every
	if every <= 0 {
		every = time.Minute
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = make(map[string]time.Time)
		l.suppressed = make(map[string]int)
	}
	if t, seen := l.last[key]; seen && now.Sub(t) < every {
		l.suppressed[key]++
		return false, 0
	}
	if _, seen := l.last[key]; !seen && len(l.last) >= MaxKeys {
		l.expire(now, every)
		if len(l.last) >= MaxKeys {
			return false, 0
		}
	}
	suppressed = l.suppressed[key]
	l.last[key] = now
	delete(l.suppressed, key)
	return true, suppressed
}

func (l *Limiter) expire(now time.Time, every time.Duration) {
	for k, t := range l.last {
		if now.Sub(t) >= every {
			delete(l.last, k)
			delete(l.suppressed, k)
		}
	}
}

func (l *Limiter) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}
