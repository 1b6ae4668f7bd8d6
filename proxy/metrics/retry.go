package metrics

import "github.com/prometheus/client_golang/prometheus"

// Reasons of policy retries (trellis_retries_total), besides
// ReasonConnectError and ReasonUnprocessed.
const (
	ReasonRetryStatus  = "status"
	ReasonRetryGRPC    = "grpc"
	ReasonRetryTimeout = "timeout"
)

// retryMetrics are the metrics of retries under a route's policy.
type retryMetrics struct {
	exhausted     *prometheus.CounterVec
	skipped       *prometheus.CounterVec
	replayRefused prometheus.Counter
}

func newRetryMetrics() retryMetrics {
	return retryMetrics{
		exhausted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_retry_budget_exhausted_total",
			Help: "Retries a route's policy asked for that the destination's retry budget refused.",
		}, []string{"dst_service"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_retry_skipped_total",
			Help: "Responses a route's policy would retry that were not retried, by why.",
		}, []string{"dst_service", "reason"}),
		replayRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_retry_replay_refused_total",
			Help: "Request bodies not kept for replay because the proxy's bound on bytes kept was reached.",
		}),
	}
}

func (r retryMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{r.exhausted, r.skipped, r.replayRefused}
}

// RetryBudgetExhausted counts a retry the destination's budget refused.
func (h *HTTP) RetryBudgetExhausted() {
	boundInc(&h.exhausted, h.m.retry.exhausted, nil, h.key.DstService)
}

// RetrySkipped counts a retry the policy asked for and that was not made.
func (h *HTTP) RetrySkipped(reason string) {
	boundInc(&h.skipped, h.m.retry.skipped, []string{h.key.DstService}, reason)
}

// ReplayRefused counts a request body not kept for replay.
func (m *Metrics) ReplayRefused() { m.retry.replayRefused.Inc() }
