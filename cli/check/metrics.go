package check

import (
	"bytes"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Proxy identity metrics (docs/metrics.md).
const (
	CertValidMetric  = "trellis_identity_cert_valid"
	CertExpiryMetric = "trellis_identity_cert_expiry_timestamp_seconds"
)

// MaxMetricsBody bounds what is read from a proxy's admin port.
const MaxMetricsBody = 16 << 20

// IdentityMetrics is what a proxy's /metrics says about its certificate.
type IdentityMetrics struct {
	HasValid  bool    // CertValidMetric present
	Valid     float64 // its value: 1 with a certificate valid now
	HasExpiry bool
	Expiry    float64 // Unix seconds
}

// ParseIdentityMetrics reads the two identity gauges from Prometheus text.
func ParseIdentityMetrics(data []byte) (IdentityMetrics, error) {
	var im IdentityMetrics
	fams, err := parseFamilies(data)
	if err != nil {
		return im, err
	}
	if v, ok := single(fams[CertValidMetric]); ok {
		im.HasValid, im.Valid = true, v
	}
	if v, ok := single(fams[CertExpiryMetric]); ok {
		im.HasExpiry, im.Expiry = true, v
	}
	return im, nil
}

// parseFamilies parses Prometheus text from a pod's admin port: bounded
// and parsed, never trusted.
func parseFamilies(data []byte) (map[string]*dto.MetricFamily, error) {
	if len(data) > MaxMetricsBody {
		return nil, fmt.Errorf("metrics body of %d bytes exceeds %d", len(data), MaxMetricsBody)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	return fams, nil
}

// single returns the value of an unlabelled gauge (or untyped) family.
func single(f *dto.MetricFamily) (float64, bool) {
	if f == nil || len(f.GetMetric()) == 0 {
		return 0, false
	}
	return value(f.GetMetric()[0])
}
