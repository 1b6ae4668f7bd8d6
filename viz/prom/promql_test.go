package prom

import (
	"os"
	"strings"
	"testing"
	"time"
)

// docs/observability.md shows each column's expression as it is here.
func TestColumnsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range append(GoldenColumns, ColMeshedPods, ColIdentities) {
		if !strings.Contains(doc, "`"+strings.ReplaceAll(c.Expr, "|", `\|`)+"`") {
			t.Errorf("column %s: docs/observability.md does not show %s", c.Name, c.Expr)
		}
	}
}

func TestQuoteAndFill(t *testing.T) {
	for in, want := range map[string]string{
		`web`:          `"web"`,
		`a"b`:          `"a\"b"`,
		`a\b`:          `"a\\b"`,
		"x\ny":         `"x\ny"`,
		"nul\x00":      `"nul\x00"`,
		`"}[1m]) or (`: `"\"}[1m]) or ("`,
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	got := ColRPS.Fill([]string{eq("namespace", "demo")}, []string{"namespace", "workload"}, 90*time.Second)
	want := `sum by (namespace,workload) (rate(trellis_responses_total{namespace="demo",classification=~"success|failure"}[90s]))`
	if got != want {
		t.Errorf("Fill = %s\nwant %s", got, want)
	}
	if d := promDuration(300 * time.Millisecond); d != "1s" {
		t.Errorf("promDuration(300ms) = %s", d)
	}
}

func TestServiceOf(t *testing.T) {
	for _, c := range []struct{ authority, ns, wantNS, wantName string }{
		{"books.demo.svc.cluster.local:80", "x", "demo", "books"},
		{"books.demo:80", "x", "demo", "books"},
		{"books:80", "client", "client", "books"},
		{"10.0.0.1:8080", "client", "client", "10.0.0.1"},
		{"[fd00::1]:80", "client", "client", "[fd00::1]"},
		{"", "client", "client", ""},
	} {
		r := ServiceOf(c.authority, c.ns)
		if r.Kind != "services" || r.Namespace != c.wantNS || r.Name != c.wantName {
			t.Errorf("ServiceOf(%q, %q) = %+v", c.authority, c.ns, r)
		}
	}
}
