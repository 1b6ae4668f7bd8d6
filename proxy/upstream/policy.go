package upstream

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/forward"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
	"github.com/trellis-mesh/trellis/proxy/retry"
)

// policyOf prepares the retries of the route's policy: the destination's
// budget, counted with this request, and the per-try timeout (which
// applies with or without a policy: backend_timeout).
func (u *Stage) policyOf(x *pipeline.Exchange, s *sending) {
	s.perTry = retry.PerTry(x.Route)
	s.policy = x.Route.GetRetry()
	if s.policy == nil || u.Budgets == nil {
		return
	}
	now := time.Now()
	if s.budget = u.Budgets.Get(x.Dest.Dst, now); s.budget != nil {
		s.budget.Deposit(now)
	}
}

// tryContext starts an attempt's context: x.Ctx bounded by the per-try
// timeout, if any. The previous attempt's is cancelled.
func (s *sending) tryContext(x *pipeline.Exchange) context.Context {
	s.endTry()
	s.ctx = x.Ctx
	if s.perTry > 0 {
		s.ctx, s.cancel = context.WithTimeout(x.Ctx, s.perTry)
	}
	return s.ctx
}

// endTry cancels the current attempt's per-try timeout, once its response
// has been written or discarded.
func (s *sending) endTry() {
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
}

// retryResponse decides whether resp, from the endpoint just tried, is
// retried under the route's policy; if so it discards resp.
func (u *Stage) retryResponse(x *pipeline.Exchange, s *sending, resp *http.Response) bool {
	if s.policy == nil {
		return false
	}
	reason, skip := retry.Decide(s.policy, x.R.Method, resp.StatusCode, trailersOnlyGRPC(resp))
	if !u.admit(x, s, reason, skip) {
		return false
	}
	// A little of the body is read so that the connection can be reused.
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	_ = resp.Body.Close()
	s.avoid(x.Endpoint)
	return true
}

// retryTimeout decides whether an attempt that failed is retried as one
// that exceeded its per-try timeout (x.Ctx, the whole request's, is not
// over).
func (u *Stage) retryTimeout(x *pipeline.Exchange, s *sending, ep string) bool {
	if s.policy == nil || s.ctx.Err() == nil || x.Ctx.Err() != nil {
		return false
	}
	reason, skip := retry.DecideTimeout(s.policy, x.R.Method, isGRPC(x.R.Header))
	if !u.admit(x, s, reason, skip) {
		return false
	}
	s.avoid(ep)
	return true
}

// admit decides a retry the policy asked for (reason) or declined (skip),
// in this order: attempts left, a body that can be sent again, a backoff
// within the request's deadline, then the destination's budget (spent
// last: only by retries that are made). Counted either way.
func (u *Stage) admit(x *pipeline.Exchange, s *sending, reason, skip string) bool {
	h := u.Metrics.HTTP(x.Key)
	if reason == "" {
		if skip != "" {
			h.RetrySkipped(skip)
		}
		return false
	}
	backoff := retry.Backoff(s.policy, s.retries, rand.Uint64())
	switch {
	case s.retries >= retry.MaxRetries(s.policy):
		skip = retry.SkipAttempts
	case !s.canReplay():
		skip = retry.SkipBody
	case !within(x.Ctx, backoff):
		skip = retry.SkipDeadline
	case s.budget == nil || !s.budget.Withdraw(time.Now(), float64(s.policy.GetBudgetRatio()), s.policy.GetBudgetMinPerSecond()):
		h.RetryBudgetExhausted()
		return false
	}
	if skip != "" {
		h.RetrySkipped(skip)
		return false
	}
	s.retries++
	s.backoff = backoff
	h.Retry(reason)
	u.Log.Debug("upstream: retrying under the route's policy", "dst", x.Dest.Dst, "reason", reason, "backoff", backoff)
	return true
}

// within reports whether ctx leaves more than d.
func within(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) > d
}

// wait sleeps the backoff a policy retry set, if any, within x.Ctx.
func (s *sending) wait(x *pipeline.Exchange) error {
	d := s.backoff
	s.backoff = 0
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-x.Ctx.Done():
		if x.R.Context().Err() != nil {
			return pipeline.ErrCancelled
		}
		return proxyerr.Classify(x.Ctx, x.Ctx.Err(), proxyerr.ToPeer, x.Dest.Dst)
	}
}

// avoid leaves ep out of the next picks while other endpoints remain.
func (s *sending) avoid(ep string) {
	if s.avoided == nil {
		s.avoided = make(map[string]bool, 2)
	}
	s.avoided[ep] = true
}

// excluded is what the next pick leaves out: the endpoints that proved
// unable to take the request, and those a policy retry avoids.
func (s *sending) excluded() map[string]bool {
	if len(s.avoided) == 0 {
		return s.skip
	}
	all := make(map[string]bool, len(s.skip)+len(s.avoided))
	for _, m := range []map[string]bool{s.skip, s.avoided} {
		for k := range m {
			all[k] = true
		}
	}
	return all
}

// trailersOnlyGRPC is the grpc-status of a trailers-only gRPC response
// (in its headers), "" otherwise. A gRPC response with a body gives its
// status in trailers after the body, once the body has been passed on to
// the client: too late to retry, so it is not retried.
func trailersOnlyGRPC(resp *http.Response) string {
	if !isGRPC(resp.Header) {
		return ""
	}
	if v := resp.Header["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func isGRPC(h http.Header) bool {
	ct := h["Content-Type"]
	return len(ct) > 0 && forward.IsGRPC(ct[0])
}

// routePolicy is what a sending keeps of the route.
type routePolicy struct {
	policy  *apiv1.RetryPolicy
	budget  *retry.Budget
	perTry  time.Duration
	ctx     context.Context // the current attempt's
	cancel  context.CancelFunc
	retries int           // policy retries made
	backoff time.Duration // before the next attempt
	avoided map[string]bool
}
