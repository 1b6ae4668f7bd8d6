// Package metrics holds the controller's Prometheus metrics (documented in
// docs/controller.md), on a registry owned by the caller.
package metrics

import (
	"time"

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
	// ReasonBadClientCertificate: an external workload's renewal did not
	// prove its current certificate (none presented, not verifying against
	// the current anchors, or a key that is not the one its status
	// records).
	ReasonBadClientCertificate = "bad_client_certificate"
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
	// PolicyStreamsRefused counts refused Policy.WatchInbound calls by
	// reason (identity, limit, bad_request).
	PolicyStreamsRefused *prometheus.CounterVec
}

// New makes the metrics on a new registry, with Go runtime and process
// collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	r := registerer{reg}
	m := &Metrics{
		Registry: reg,

		CertificatesIssued: r.counter("trellis_controller_certificates_issued_total",
			"Workload certificates issued by Identity.Certify."),
		CertificatesRefused: r.counterVec("trellis_controller_certificates_refused_total",
			"Identity.Certify calls refused, by reason.", "reason",
			ReasonBadRequest, ReasonUnknownIdentity, ReasonBadToken, ReasonBadCSR, ReasonIdentityMismatch, ReasonIssuerExpired, ReasonInternal,
			ReasonBadClientCertificate),
		IssuerExpiry: r.gauge("trellis_controller_issuer_expiry_timestamp_seconds",
			"Expiry of the issuer (intermediate CA) certificate, Unix time."),
		AnchorExpiry: r.gauge("trellis_controller_anchor_expiry_timestamp_seconds",
			"Expiry of the trust anchor (root CA) certificate, Unix time."),
		ServingCertExpiry: r.gauge("trellis_controller_serving_cert_expiry_timestamp_seconds",
			"Expiry of the controller's own serving certificate, Unix time."),

		ConfigReloads: r.counterVec("trellis_controller_config_reloads_total",
			"Reloads of the changed store file, by result (ok, error).", "result",
			"ok", "error"),
		ConfigLastValid: r.gauge("trellis_controller_config_last_reload_successful",
			"1 if the store file on disk is the one being served, 0 if its last edit was rejected."),

		DestinationStreams: r.gauge("trellis_controller_destination_streams",
			"Open Destination.Get streams."),
		DestinationUpdates: r.counterVec("trellis_controller_destination_updates_total",
			"Destination.Get updates sent, by kind (add, remove, no_endpoints).", "kind",
			"add", "remove", "no_endpoints"),
		RouteStreams: r.gauge("trellis_controller_route_streams",
			"Open Destination.GetRoutes streams."),
		PolicyStreams: r.gauge("trellis_controller_policy_streams",
			"Open Policy.WatchInbound streams."),
		PolicyStreamsRefused: r.counterVec("trellis_controller_policy_streams_refused_total",
			"Policy.WatchInbound calls refused, by reason (identity: the caller is not the workload; limit: too many streams of one identity; bad_request).",
			"reason", "identity", "limit", "bad_request"),
	}
	m.ConfigLastValid.Set(1)
	return m
}

// registerer makes metrics already registered on its registry.
type registerer struct{ reg *prometheus.Registry }

func (r registerer) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	r.reg.MustRegister(c)
	return c
}

func (r registerer) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	r.reg.MustRegister(g)
	return g
}

// counterVec makes a counter with one label and creates the series of the
// given values, so dashboards see zeros, not gaps.
func (r registerer) counterVec(name, help, label string, values ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
	r.reg.MustRegister(c)
	for _, v := range values {
		c.WithLabelValues(v)
	}
	return c
}

// ConfigReloaded records a store reload attempt.
func (m *Metrics) ConfigReloaded(err error) {
	// The gauge first: whoever sees the counter move sees the gauge too.
	if err != nil {
		m.ConfigLastValid.Set(0)
		m.ConfigReloads.WithLabelValues("error").Inc()
		return
	}
	m.ConfigLastValid.Set(1)
	m.ConfigReloads.WithLabelValues("ok").Inc()
}

// IssuerValid is trellis_controller_issuer_valid, read at scrape time from
// check (the CA's: nil while the issuer and its chain can sign now).
func IssuerValid(check func(now time.Time) error) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trellis_controller_issuer_valid",
		Help: "1 while the issuer can sign (it and its chain are within their validity), 0 while Certify is refused for it.",
	}, func() float64 {
		if check(time.Now()) != nil {
			return 0
		}
		return 1
	})
}
