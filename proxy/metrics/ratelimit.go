package metrics

import "github.com/prometheus/client_golang/prometheus"

// Reasons of trellis_ratelimit_refused_total.
const (
	LimitRate        = "rate"        // a token bucket (the server's or a client's) was empty: 429
	LimitConcurrency = "concurrency" // the concurrency limit (hard or adaptive) was reached: 503
)

// Client labels of trellis_ratelimit_refused_total: never the caller's
// identity as such (a caller chooses it within what mesh TLS accepts),
// only what the configuration names.
const (
	LimitClientServer = ""           // the server's own bucket or its concurrency limit
	LimitClientEach   = "per_client" // a client's perClient bucket (or the shared one past the bound)
	// An override's bucket is labelled with the identity the RateLimit
	// names: bounded by the configuration.
)

// Reasons of trellis_ratelimit_exempt_total.
const (
	// ExemptProbe: a kubelet HTTP probe (plaintext GET of a probe path
	// of the pod's spec), within its allowance.
	ExemptProbe = "kubelet_probe"
)

// RateLimit is the rate and concurrency limits' metrics (inbound: a
// Server's RateLimit; outbound: a Service's, rate only)
// (docs/metrics.md): trellis_ratelimit_refused_total,
// trellis_ratelimit_exempt_total, trellis_concurrency_limit and
// trellis_concurrency_in_flight.
type RateLimit struct {
	refused  *prometheus.CounterVec
	exempt   *prometheus.CounterVec
	limit    *prometheus.GaugeVec
	inFlight *prometheus.GaugeVec
}

// NewRateLimit creates the limits' metrics and registers them on reg (nil:
// unregistered).
func NewRateLimit(reg prometheus.Registerer) (*RateLimit, error) {
	m := &RateLimit{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_ratelimit_refused_total",
			Help: "Requests a RateLimit refused, by direction (inbound: the server proxy refused before the app saw them; outbound: the client proxy refused before sending them), server (inbound: the Server's policy name; outbound: the RateLimit, namespace/name), reason (rate: 429, concurrency: 503) and client bucket (\"\": the server's or, outbound, the client proxy's own; per_client; or an override's identity).",
		}, []string{"direction", "server", "reason", "client"}),
		exempt: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_ratelimit_exempt_total",
			Help: "Inbound requests of a server with a RateLimit that its limits let through uncounted, by server and reason (kubelet_probe: a plaintext GET of a kubelet probe path of the pod).",
		}, []string{"server", "reason"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_concurrency_limit",
			Help: "The inbound concurrency limit of a server now: the adaptive limit (capped by concurrency), or the hard cap.",
		}, []string{"server"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_concurrency_in_flight",
			Help: "Inbound requests of a server with a concurrency limit in flight to the app now.",
		}, []string{"server"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.refused, m.exempt, m.limit, m.inFlight} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// Refused counts a refused request of direction (Inbound or Outbound).
func (m *RateLimit) Refused(direction, server, reason, client string) {
	m.refused.WithLabelValues(direction, server, reason, client).Inc()
}

// Exempt counts a request the limits let through uncounted.
func (m *RateLimit) Exempt(server, reason string) {
	m.exempt.WithLabelValues(server, reason).Inc()
}

// ExemptCounter is the counter Exempt increments, for tests.
func (m *RateLimit) ExemptCounter(server, reason string) prometheus.Counter {
	return m.exempt.WithLabelValues(server, reason)
}

// Concurrency returns the gauges of a server's limit and requests in flight.
func (m *RateLimit) Concurrency(server string) (limit, inFlight prometheus.Gauge) {
	return m.limit.WithLabelValues(server), m.inFlight.WithLabelValues(server)
}

// Forget removes a server's gauges (its concurrency limit is gone).
func (m *RateLimit) Forget(server string) {
	m.limit.DeleteLabelValues(server)
	m.inFlight.DeleteLabelValues(server)
}

// RefusedCounter is the counter Refused increments, for tests.
func (m *RateLimit) RefusedCounter(direction, server, reason, client string) prometheus.Counter {
	return m.refused.WithLabelValues(direction, server, reason, client)
}
