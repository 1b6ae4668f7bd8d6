// Package metrics holds the controller's Prometheus metrics (documented in
// docs/controller.md), on a registry owned by the caller.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Refusal reasons of Identity.Certify, the values of the reason label.
const (
	ReasonBadRequest       = "bad_request"
	ReasonUnknownIdentity  = "unknown_identity"
	ReasonBadToken         = "bad_token"
	ReasonBadCSR           = "bad_csr"
	ReasonIdentityMismatch = "identity_mismatch"
	ReasonIssuerExpired    = "issuer_expired"
	ReasonInternal         = "internal"
)

// Metrics are every controller metric.
type Metrics struct {
	Registry *prometheus.Registry

	CertificatesIssued  prometheus.Counter
	CertificatesRefused *prometheus.CounterVec
	IssuerExpiry        prometheus.Gauge
	AnchorExpiry        prometheus.Gauge
	ServingCertExpiry   prometheus.Gauge

	ConfigReloads   *prometheus.CounterVec
	ConfigLastValid prometheus.Gauge

	DestinationStreams prometheus.Gauge
	DestinationUpdates *prometheus.CounterVec
	RouteStreams       prometheus.Gauge
	PolicyStreams      prometheus.Gauge
}

// New makes the metrics on a new registry, with Go runtime and process
// collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		CertificatesIssued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trellis_controller_certificates_issued_total",
			Help: "Workload certificates issued by Identity.Certify.",
		}),
		CertificatesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_certificates_refused_total",
			Help: "Identity.Certify calls refused, by reason.",
		}, []string{"reason"}),
		IssuerExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_issuer_expiry_timestamp_seconds",
			Help: "Expiry of the issuer (intermediate CA) certificate, Unix time.",
		}),
		AnchorExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_anchor_expiry_timestamp_seconds",
			Help: "Expiry of the trust anchor (root CA) certificate, Unix time.",
		}),
		ServingCertExpiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_serving_cert_expiry_timestamp_seconds",
			Help: "Expiry of the controller's own serving certificate, Unix time.",
		}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_config_reloads_total",
			Help: "Reloads of the changed store file, by result (ok, error).",
		}, []string{"result"}),
		ConfigLastValid: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_config_last_reload_successful",
			Help: "1 if the store file on disk is the one being served, 0 if its last edit was rejected.",
		}),
		DestinationStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_destination_streams",
			Help: "Open Destination.Get streams.",
		}),
		DestinationUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_destination_updates_total",
			Help: "Destination.Get updates sent, by kind (add, remove, no_endpoints).",
		}, []string{"kind"}),
		RouteStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_route_streams",
			Help: "Open Destination.GetRoutes streams.",
		}),
		PolicyStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_policy_streams",
			Help: "Open Policy.WatchInbound streams.",
		}),
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.CertificatesIssued, m.CertificatesRefused, m.IssuerExpiry, m.AnchorExpiry, m.ServingCertExpiry,
		m.ConfigReloads, m.ConfigLastValid,
		m.DestinationStreams, m.DestinationUpdates, m.RouteStreams, m.PolicyStreams,
	)
	// Pre-create the label values so dashboards see zeros, not gaps.
	for _, r := range []string{ReasonBadRequest, ReasonUnknownIdentity, ReasonBadToken, ReasonBadCSR, ReasonIdentityMismatch, ReasonIssuerExpired, ReasonInternal} {
		m.CertificatesRefused.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.ConfigReloads.WithLabelValues(r)
	}
	for _, k := range []string{"add", "remove", "no_endpoints"} {
		m.DestinationUpdates.WithLabelValues(k)
	}
	m.ConfigLastValid.Set(1)
	return m
}

// ConfigReloaded records a store reload attempt.
func (m *Metrics) ConfigReloaded(err error) {
	if err != nil {
		m.ConfigReloads.WithLabelValues("error").Inc()
		m.ConfigLastValid.Set(0)
		return
	}
	m.ConfigReloads.WithLabelValues("ok").Inc()
	m.ConfigLastValid.Set(1)
}
