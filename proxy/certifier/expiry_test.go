package certifier

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/syncbuf"
)

// TestExpiredCertificateReported lets the certificate expire while the
// control plane refuses to renew it: the validity gauge turns 0, the issuer
// series disappears, one clear log line says why; renewal restores both.
func TestExpiredCertificateReported(t *testing.T) {
	e := newEnv(t, 2*time.Second)
	var logs syncbuf.Buffer
	cfg := e.config()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e.start(t, cfg)
	waitFor(t, "first certificate", 10*time.Second, e.store.Ready)

	issuerFP, anchorFP := pki.CertFingerprint(e.srv.issuer.Cert), pki.CertFingerprint(e.srv.root)
	issuerLabels := map[string]string{"fingerprint": issuerFP, "anchor_fingerprint": anchorFP}
	if v, ok := metricValue(t, e.reg, "trellis_identity_cert_valid", nil); !ok || v != 1 {
		t.Fatalf("cert_valid = %v (found %v), want 1", v, ok)
	}
	if v, ok := metricValue(t, e.reg, "trellis_identity_cert_issuer_info", issuerLabels); !ok || v != 1 {
		t.Fatalf("cert_issuer_info%v = %v (found %v), want 1", issuerLabels, v, ok)
	}

	e.srv.set(func(s *identityServer) {
		s.fail = func(*apiv1.CertifyRequest) (*apiv1.CertifyResponse, error) {
			return nil, status.Error(codes.Unavailable, "identity service down for the test")
		}
	})
	waitFor(t, "the certificate to expire", 10*time.Second, func() bool { return !e.store.Ready() })
	waitFor(t, "cert_valid 0", 5*time.Second, func() bool {
		v, ok := metricValue(t, e.reg, "trellis_identity_cert_valid", nil)
		return ok && v == 0
	})
	if _, ok := metricValue(t, e.reg, "trellis_identity_cert_issuer_info", nil); ok {
		t.Error("cert_issuer_info still exported for an expired certificate")
	}
	waitFor(t, "the expiry log line", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "WORKLOAD CERTIFICATE EXPIRED")
	})
	// Several watch ticks later, still one line: it is rate-limited.
	time.Sleep(2500 * time.Millisecond)
	out := logs.String()
	if n := strings.Count(out, "WORKLOAD CERTIFICATE EXPIRED"); n != 1 {
		t.Errorf("expiry logged %d times within its interval, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "identity service down for the test") || !strings.Contains(out, "level=ERROR") {
		t.Errorf("expiry line lacks the renewal error or the error level:\n%s", out)
	}

	e.srv.set(func(s *identityServer) { s.fail = nil })
	waitFor(t, "renewal", 10*time.Second, e.store.Ready)
	waitFor(t, "cert_valid 1", 5*time.Second, func() bool {
		v, _ := metricValue(t, e.reg, "trellis_identity_cert_valid", nil)
		return v == 1
	})
	if v, ok := metricValue(t, e.reg, "trellis_identity_cert_issuer_info", issuerLabels); !ok || v != 1 {
		t.Errorf("cert_issuer_info after renewal = %v (found %v)", v, ok)
	}
	waitFor(t, "the recovery log line", 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "workload certificate valid again")
	})
}
