package retry

import (
	"net/http"
	"strconv"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Reasons of a policy retry (trellis_retries_total) and of a retry not
// made (trellis_retry_skipped_total).
const (
	ReasonStatus  = "status"  // the response's HTTP status is retried
	ReasonGRPC    = "grpc"    // the trailers-only grpc-status is retried
	ReasonTimeout = "timeout" // the attempt exceeded its per-try timeout

	SkipBody     = "body"     // the request body cannot be sent again
	SkipMethod   = "method"   // a 5xx of a non-idempotent request, no explicit list
	SkipAttempts = "attempts" // max_retries reached
	SkipDeadline = "deadline" // the backoff would outlast the request's deadline
	SkipBudget   = "budget"   // the destination's retry budget is spent
)

// Defaults of a RetryPolicy's zero fields, and the bound on max_retries.
const (
	DefaultMaxRetries  = 2
	MaxMaxRetries      = 10
	DefaultBackoffBase = 25 * time.Millisecond
	DefaultBackoffMax  = 250 * time.Millisecond
)

// grpcDeadlineExceeded is what a per-try timeout is to a gRPC policy.
const grpcDeadlineExceeded = 4

// MaxRetries is how many retries p allows: max_retries, 0 meaning
// DefaultMaxRetries, at most MaxMaxRetries.
func MaxRetries(p *apiv1.RetryPolicy) int {
	n := int(p.GetMaxRetries())
	switch {
	case n == 0:
		return DefaultMaxRetries
	case n > MaxMaxRetries:
		return MaxMaxRetries
	}
	return n
}

// Decide says whether a response (status, and grpcStatus from its
// headers, "" if none) is retried under p: the reason to retry, or ""
// and why not (SkipMethod) or "" and "" when p does not retry it at all.
// An explicit retry_on_status list applies to every method (the user's
// decision, as in the Gateway API); an empty one means 5xx, and only for
// idempotent methods.
func Decide(p *apiv1.RetryPolicy, method string, status int, grpcStatus string) (reason, skip string) {
	if p == nil {
		return "", ""
	}
	if grpcStatus != "" && grpcStatus != "0" {
		if code, err := strconv.ParseUint(grpcStatus, 10, 32); err == nil && contains(p.RetryOnGrpc, uint32(code)) {
			return ReasonGRPC, ""
		}
	}
	if len(p.RetryOnStatus) > 0 {
		if status > 0 && contains(p.RetryOnStatus, uint32(status)) {
			return ReasonStatus, ""
		}
		return "", ""
	}
	if status < 500 || status > 599 {
		return "", ""
	}
	if !Idempotent(method) {
		return "", SkipMethod
	}
	return ReasonStatus, ""
}

// DecideTimeout says whether an attempt that exceeded its per-try timeout
// is retried. An idempotent request always is when a policy exists (the
// Gateway API: a retry stanza retries timeouts); another only when the
// policy lists 504 or, for gRPC, DEADLINE_EXCEEDED, as it may have been
// processed.
func DecideTimeout(p *apiv1.RetryPolicy, method string, grpc bool) (reason, skip string) {
	if p == nil {
		return "", ""
	}
	if Idempotent(method) || contains(p.RetryOnStatus, http.StatusGatewayTimeout) ||
		grpc && contains(p.RetryOnGrpc, grpcDeadlineExceeded) {
		return ReasonTimeout, ""
	}
	return "", SkipMethod
}

func contains(list []uint32, v uint32) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Idempotent reports whether method is idempotent (RFC 9110 9.2.2).
func Idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// Backoff is the wait before retry n (0 for the first): uniform between
// the base and min(max, base × 2^(n+1)). Never under the base, which the
// Gateway API makes a minimum; jittered so that callers failing together
// do not retry together. r is a uniform random uint64.
func Backoff(p *apiv1.RetryPolicy, n int, r uint64) time.Duration {
	base, ceil := p.GetBackoffBase().AsDuration(), p.GetBackoffMax().AsDuration()
	if base <= 0 {
		base = DefaultBackoffBase
	}
	if ceil <= 0 {
		ceil = DefaultBackoffMax
	}
	if ceil < base {
		ceil = base
	}
	hi := ceil
	if n < 62 && base <= ceil>>(n+1) { // base × 2^(n+1) <= ceil: no overflow
		hi = base << (n + 1)
	}
	return base + time.Duration(r%uint64(hi-base+1))
}

// PerTry is the timeout of one attempt on route: the smaller of the
// policy's per_try_timeout and the route's backend_timeout, 0 for none.
func PerTry(route *apiv1.Route) time.Duration {
	a := positive(route.GetRetry().GetPerTryTimeout().AsDuration())
	b := positive(route.GetBackendTimeout().AsDuration())
	if a == 0 || (b != 0 && b < a) {
		return b
	}
	return a
}

func positive(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	return d
}
