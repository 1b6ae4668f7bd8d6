package notify

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrShuttingDown ends open streams when the controller stops, so a
// graceful stop does not wait for clients that never hang up; the client
// sees Unavailable and reconnects (to another replica, or after restart).
var ErrShuttingDown = status.Error(codes.Unavailable, "controller shutting down")

// ResolveFunc computes a stream's answer now. It returns the answer, a
// channel closed when the answer may have changed, and a release func
// called once the stream stops waiting on the channel. The channel must be
// taken before the state is read (Topics.Acquire first), so no change in
// between is missed. A nil channel means the answer never changes.
// ResolveFunc must not block on the network: it reads caches.
type ResolveFunc[A any] func() (answer A, changed <-chan struct{}, release func())

// SendFunc sends what a client needs to go from prev to next; first is
// true for the stream's first answer (prev is then the zero value). It
// sends nothing when nothing the client sees changed.
type SendFunc[A any] func(prev, next A, first bool) error

// Watch runs one stream: resolve, send, wait for a change, resolve again.
// Changes during a send or a wait are coalesced: the next resolve reads
// the latest state, so a slow client gets fewer, up-to-date answers and
// never a backlog. A client that stops reading blocks only its own send
// (HTTP/2 flow control is per stream), never a notifier or another
// stream. Watch returns the send error, ctx's error when the client
// leaves, or ErrShuttingDown once done is closed.
func Watch[A any](ctx context.Context, done <-chan struct{}, resolve ResolveFunc[A], send SendFunc[A]) error {
	return WatchSettled(ctx, done, 0, resolve, send)
}

// WatchSettled is Watch that, after each change, waits settle before it
// resolves again, so that objects written together (a Server and the
// AuthorizationPolicy that allows its callers, applied in one kubectl
// apply but seen by two informers one after the other) reach the client
// in one answer, not as a deny and then an allow.
func WatchSettled[A any](ctx context.Context, done <-chan struct{}, settle time.Duration, resolve ResolveFunc[A], send SendFunc[A]) error {
	var prev A
	first := true
	for {
		next, changed, release := resolve()
		err := send(prev, next, first)
		if err == nil {
			err = wait(ctx, done, changed)
		}
		release()
		if err == nil && settle > 0 {
			err = pause(ctx, done, settle)
		}
		if err != nil {
			return err
		}
		prev, first = next, false
	}
}

// wait blocks until changed is closed (nil), the client leaves (its
// context error) or the controller stops (ErrShuttingDown).
func wait(ctx context.Context, done, changed <-chan struct{}) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrShuttingDown
	case <-changed:
		return nil
	}
}

// pause waits d, or less if the client leaves or the controller stops.
func pause(ctx context.Context, done <-chan struct{}, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-done:
		return ErrShuttingDown
	case <-t.C:
		return nil
	}
}

// SendChanged is a SendFunc for answers sent whole: it sends next when it
// differs from what the client has (equal false), and nothing otherwise.
func SendChanged[A any](equal func(a, b A) bool, send func(A) error) SendFunc[A] {
	return func(prev, next A, first bool) error {
		if !first && equal(prev, next) {
			return nil
		}
		return send(next)
	}
}
