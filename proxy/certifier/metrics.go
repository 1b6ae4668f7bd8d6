package certifier

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/meshtls"
)

// ControlPlaneConnectedHelp is the help text of trellis_control_plane_connected,
// shared with proxy/discovery: a collector registered twice must match exactly.
const ControlPlaneConnectedHelp = "1 while a stream/call to the controller is healthy."

type metrics struct {
	certify   *prometheus.CounterVec
	expiry    prometheus.Gauge
	connected prometheus.Gauge

	bundleMu sync.Mutex
	bundle   *prometheus.GaugeVec
	bundleFP string
}

func newMetrics(reg prometheus.Registerer, store *meshtls.Store) (*metrics, error) {
	certify := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_identity_certify_total",
		Help: "Certify calls.",
	}, []string{"result"})
	expiry := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trellis_identity_cert_expiry_timestamp_seconds",
		Help: "Expiry of the current workload certificate (Unix time).",
	})
	bundle := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_identity_trust_bundle_info",
		Help: "1 for the SHA-256 fingerprint of the trust bundle in use.",
	}, []string{"fingerprint"})
	connected := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trellis_control_plane_connected",
		Help: ControlPlaneConnectedHelp,
	}, []string{"service"})
	// Both read the Store at scrape time, so they turn to 0 / disappear the
	// moment the certificate expires, whatever the renewal loop is doing.
	valid := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trellis_identity_cert_valid",
		Help: "1 while the proxy holds a workload certificate valid now; 0 when it has none or it expired (mesh traffic is then refused).",
	}, func() float64 {
		if store.Ready() {
			return 1
		}
		return 0
	})
	var err error
	if _, err = register(reg, valid); err != nil {
		return nil, err
	}
	if _, err = register[prometheus.Collector](reg, &issuerCollector{store: store}); err != nil {
		return nil, err
	}
	if certify, err = register(reg, certify); err != nil {
		return nil, err
	}
	if expiry, err = register(reg, expiry); err != nil {
		return nil, err
	}
	if bundle, err = register(reg, bundle); err != nil {
		return nil, err
	}
	if connected, err = register(reg, connected); err != nil {
		return nil, err
	}
	certify.WithLabelValues("ok")
	certify.WithLabelValues("error")
	return &metrics{
		certify:   certify,
		expiry:    expiry,
		connected: connected.WithLabelValues("identity"),
		bundle:    bundle,
	}, nil
}

// register registers c, or returns the identical collector registered
// before (a restarted Run, or another package sharing a metric).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register metric: %w", err)
	}
	return c, nil
}

func (m *metrics) setBundle(fp string) {
	m.bundleMu.Lock()
	defer m.bundleMu.Unlock()
	if fp == m.bundleFP {
		return
	}
	if m.bundleFP != "" {
		m.bundle.DeleteLabelValues(m.bundleFP)
	}
	m.bundle.WithLabelValues(fp).Set(1)
	m.bundleFP = fp
}

var issuerDesc = prometheus.NewDesc("trellis_identity_cert_issuer_info",
	"1 for the current workload certificate: SHA-256 of the DER of the certificate that signed it, and of the bundle anchor its chain verifies to; absent without a valid certificate.",
	[]string{"fingerprint", "anchor_fingerprint"}, nil)

// issuerCollector exports trellis_identity_cert_issuer_info from the Store
// at scrape time: no series without a valid certificate, and never a stale
// one after a renewal or a trust bundle change.
type issuerCollector struct{ store *meshtls.Store }

func (c *issuerCollector) Describe(ch chan<- *prometheus.Desc) { ch <- issuerDesc }

func (c *issuerCollector) Collect(ch chan<- prometheus.Metric) {
	issuer, anchor, ok := c.store.CertIssuer()
	if !ok {
		return
	}
	ch <- prometheus.MustNewConstMetric(issuerDesc, prometheus.GaugeValue, 1, issuer, anchor)
}
