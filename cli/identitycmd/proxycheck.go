package identitycmd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/trellis-mesh/trellis/internal/pki"
)

// Proxy metrics the rotation reads (docs/metrics.md).
const (
	// trustBundleMetric{fingerprint}: 1 for pki.Fingerprint of the trust
	// bundle the proxy uses.
	trustBundleMetric = "trellis_identity_trust_bundle_info"
	// certIssuerMetric{fingerprint, anchor_fingerprint}: 1 for the issuer
	// of the proxy's current workload certificate: fingerprint is the
	// SHA-256 of that issuer certificate's DER (the chain's second
	// certificate), anchor_fingerprint the SHA-256 of the DER of the
	// bundle anchor the chain verifies to (empty if none).
	certIssuerMetric = "trellis_identity_cert_issuer_info"
)

// maxMetricsBody bounds what is read from a proxy's admin port.
const maxMetricsBody = 16 << 20

type issuerInfo struct {
	fingerprint string
	anchor      string
}

// proxyMetrics is what a proxy reports about its identity.
type proxyMetrics struct {
	bundles []string     // fingerprints of series with a non-zero value
	issuers []issuerInfo // likewise
	// hasIssuerMetric is false for proxies that do not export the issuer
	// metric at all, which makes them unprovable rather than wrong.
	hasIssuerMetric bool
}

// parseProxyMetrics reads the two identity metrics from Prometheus text.
func parseProxyMetrics(r io.Reader) (proxyMetrics, error) {
	var pm proxyMetrics
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return pm, fmt.Errorf("parse metrics: %w", err)
	}
	if f, ok := fams[trustBundleMetric]; ok {
		for _, m := range f.GetMetric() {
			if value(m) != 0 {
				pm.bundles = append(pm.bundles, label(m, "fingerprint"))
			}
		}
	}
	if f, ok := fams[certIssuerMetric]; ok {
		pm.hasIssuerMetric = true
		for _, m := range f.GetMetric() {
			if value(m) != 0 {
				pm.issuers = append(pm.issuers, issuerInfo{fingerprint: label(m, "fingerprint"), anchor: label(m, "anchor_fingerprint")})
			}
		}
	}
	return pm, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return strings.ToLower(l.GetValue())
		}
	}
	return ""
}

func metricsURL(addr string) string {
	if strings.Contains(addr, "://") {
		if strings.Count(addr, "/") <= 2 {
			return strings.TrimSuffix(addr, "/") + "/metrics"
		}
		return addr
	}
	return "http://" + addr + "/metrics"
}

func fetchProxyMetrics(ctx context.Context, client *http.Client, addr string) (proxyMetrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL(addr), nil)
	if err != nil {
		return proxyMetrics{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return proxyMetrics{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return proxyMetrics{}, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	return parseProxyMetrics(io.LimitReader(resp.Body, maxMetricsBody))
}

// proxyChecker returns the check switch-issuer and remove-old run before
// changing anything: every listed proxy must be ready for the stage.
//   - switch-issuer: every proxy uses the current bundle (it trusts the new anchor);
//   - remove-old: that, and every proxy's certificate comes from the new
//     anchor's issuer, so nobody depends on the old anchor any more.
func proxyChecker(ctx context.Context, addrs []string, skip bool, timeout time.Duration, warn io.Writer) func(*rotationState, string) error {
	return func(s *rotationState, stage string) error {
		if skip {
			fmt.Fprintf(warn, "warning: --skip-proxy-check: not checking that proxies are ready for %s\n", stage)
			return nil
		}
		if len(addrs) == 0 {
			return errors.New("no --proxy-admin given: name every proxy's admin address so the stage can check they are ready (or --skip-proxy-check when no proxy runs)")
		}
		client := &http.Client{Timeout: timeout}
		var errs []error
		for _, a := range addrs {
			pm, err := fetchProxyMetrics(ctx, client, a)
			if err != nil {
				errs = append(errs, fmt.Errorf("proxy %s: cannot read its metrics: %w", a, err))
				continue
			}
			if err := proxyReady(s, stage, pm); err != nil {
				errs = append(errs, fmt.Errorf("proxy %s: %w", a, err))
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("%d of %d proxies not ready:\n  %w", len(errs), len(addrs), joinLines(errs))
		}
		return nil
	}
}

// proxyReady is the pure decision for one proxy.
func proxyReady(s *rotationState, stage string, pm proxyMetrics) error {
	want := pki.Fingerprint(s.bundle)
	final := pki.Fingerprint([]*x509.Certificate{s.anchor})
	okBundle := len(pm.bundles) > 0
	for _, b := range pm.bundles {
		if b != want && !(stage == StageRemoveOld && b == final) {
			okBundle = false
		}
	}
	if !okBundle {
		got := "none"
		if len(pm.bundles) > 0 {
			got = strings.Join(pm.bundles, ", ")
		}
		return fmt.Errorf("trust bundle fingerprint is %s, want %s (the current bundle): it has not received the bundle with the new anchor yet", got, want)
	}
	if stage != StageRemoveOld {
		return nil
	}
	if !pm.hasIssuerMetric {
		return fmt.Errorf("does not report %s (no certificate yet, or a proxy too old to export it), so it cannot be shown to hold a certificate from the new anchor", certIssuerMetric)
	}
	if len(pm.issuers) == 0 {
		return fmt.Errorf("reports no current certificate issuer (%s is 0 for every series): it has no valid certificate", certIssuerMetric)
	}
	anchorFP, issuerFP := pki.CertFingerprint(s.anchor), pki.CertFingerprint(s.issuer)
	for _, is := range pm.issuers {
		if is.anchor != anchorFP && is.fingerprint != issuerFP {
			return fmt.Errorf("still holds a certificate from issuer %s (anchor %q), not from the new anchor %s: wait for it to renew",
				shortFP(is.fingerprint), shortFP(is.anchor), shortFP(anchorFP))
		}
	}
	return nil
}

// joinLines joins errors one per line, indented, keeping them matchable.
func joinLines(errs []error) error {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return &multiError{msg: strings.Join(msgs, "\n  "), errs: errs}
}

type multiError struct {
	msg  string
	errs []error
}

func (m *multiError) Error() string   { return m.msg }
func (m *multiError) Unwrap() []error { return m.errs }
