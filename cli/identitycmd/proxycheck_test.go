package identitycmd

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestParseProxyMetrics(t *testing.T) {
	text := `# TYPE trellis_identity_trust_bundle_info gauge
trellis_identity_trust_bundle_info{fingerprint="AB12"} 1
trellis_identity_trust_bundle_info{fingerprint="old"} 0
# TYPE trellis_identity_cert_issuer_info gauge
trellis_identity_cert_issuer_info{fingerprint="i1",anchor_fingerprint="a1"} 1
# TYPE trellis_requests_total counter
trellis_requests_total{direction="inbound"} 7
`
	pm, err := parseProxyMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(pm.bundles) != 1 || pm.bundles[0] != "ab12" || !pm.hasIssuerMetric || len(pm.issuers) != 1 || pm.issuers[0] != (issuerInfo{"i1", "a1"}) {
		t.Fatalf("parsed %+v", pm)
	}
	for name, bad := range map[string]string{
		"bad value":  "trellis_identity_trust_bundle_info{fingerprint=\"x\"} one\n",
		"open label": "trellis_identity_trust_bundle_info{fingerprint=\"x} 1\n",
	} {
		if _, err := parseProxyMetrics(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseProxyMetrics(f *testing.F) {
	f.Add("trellis_identity_trust_bundle_info{fingerprint=\"ab\"} 1\n")
	f.Add("# TYPE trellis_identity_cert_issuer_info gauge\ntrellis_identity_cert_issuer_info{fingerprint=\"i\",anchor_fingerprint=\"a\"} 1\n")
	f.Add("# TYPE x histogram\nx_bucket{le=\"+Inf\"} 1\nx_sum 1\nx_count 1\n")
	f.Add("{")
	f.Fuzz(func(t *testing.T, text string) {
		pm, err := parseProxyMetrics(strings.NewReader(text))
		if err != nil {
			return
		}
		if len(pm.issuers) > 0 && !pm.hasIssuerMetric {
			t.Fatal("issuers without the metric")
		}
	})
}

func TestEveryIdentityCommandHasHelpWithExamples(t *testing.T) {
	var walk func(*cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		n++
		if c.Short == "" || c.Example == "" {
			t.Errorf("%q lacks Short or Example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(New())
	if n != 10 {
		t.Errorf("walked %d commands, want 10", n)
	}
}
