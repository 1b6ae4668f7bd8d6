// Package retry holds the pure parts of the outbound retries that cannot
// storm (docs/traffic.md, "Retries and budgets"): which responses a route's
// RetryPolicy retries (Decide), the backoff between attempts, the per-try
// timeout, the retry Budget per destination (a sliding window of atomic
// counters) and the process-wide bound on request bytes kept for replay
// (Bytes). The upstream stage (proxy/upstream) applies them.
package retry
