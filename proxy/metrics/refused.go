package metrics

import "github.com/prometheus/client_golang/prometheus"

// Protocols of trellis_inbound_refused_total: what the refused caller spoke.
const (
	RefusedHTTP   = "http"   // answered 403 with trellis-error
	RefusedOpaque = "opaque" // TCP, non-mesh TLS or a mesh opaque stream: closed
)

func newRefused() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_inbound_refused_total",
		Help: "Inbound requests and connections refused before reaching the app, by reason (forbidden_port, unauthenticated).",
	}, []string{"peer_identity", "tls", "protocol", "reason"})
}

// Refused counts an inbound request or connection refused before it
// reached the app. peer is the caller's mesh identity ("" for a caller
// without mesh TLS).
func (m *Metrics) Refused(peer string, tls bool, protocol, reason string) {
	t := "false"
	if tls {
		t = "true"
	}
	m.refused.WithLabelValues(peer, t, protocol, reason).Inc()
}
