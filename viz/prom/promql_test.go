package prom

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
)

// docs/observability.md shows each column's expression as it is here.
func TestColumnsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, c := range append(append(GoldenColumns, ColMeshedPods, ColIdentities), RouteColumns...) {
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

// The outbound route rows' selection: the resource's outbound route
// series, narrowed by --to svc to the routes clients called that service
// by (its service label), none where the metrics cannot tell.
func TestOutboundRouteSel(t *testing.T) {
	resource := []string{eq("job", ProxyJob), eq(LabelWorkload, "web")}
	books := model.Resource{Kind: "services", Namespace: "demo", Name: "books"}
	for _, c := range []struct {
		name     string
		q        model.Query
		ok       bool
		matcher  string   // the --to matcher, "" for none
		match    []string // authorities it must match
		mismatch []string // and must not
	}{
		{name: "all", ok: true},
		{name: "to a service", q: model.Query{To: books}, ok: true, matcher: "service=~",
			match:    []string{"books:80", "books.demo:80", "books.demo.svc.cluster.local:8080", "books.demo.svc.cluster.local"},
			mismatch: []string{"books-v2.demo:80", "books.other:80", "xbooks.demo:80", "books.demo:80x"}},
		{name: "to a workload: no peer identity on route series", q: model.Query{To: model.Resource{Kind: "deployments", Name: "books"}}},
		{name: "from: inbound, no routes", q: model.Query{From: model.Resource{Kind: "deployments", Name: "web"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sel, ok := outboundRouteSel(resource, c.q)
			if ok != c.ok {
				t.Fatalf("ok = %v, want %v (%v)", ok, c.ok, sel)
			}
			if !ok {
				return
			}
			if !slices.Equal(sel[:3], append(resource, `direction="outbound"`)) {
				t.Errorf("sel = %v", sel)
			}
			if c.matcher == "" {
				if len(sel) != 3 {
					t.Errorf("sel = %v, want no --to matcher", sel)
				}
				return
			}
			m := sel[len(sel)-1]
			if !strings.HasPrefix(m, c.matcher) {
				t.Fatalf("matcher %s, want %s...", m, c.matcher)
			}
			// Prometheus anchors a regex matcher: so does the check.
			re := regexp.MustCompile("^(?:" + unquoteRE(t, strings.TrimPrefix(m, c.matcher)) + ")$")
			for _, a := range c.match {
				if !re.MatchString(a) {
					t.Errorf("%s does not match %s", m, a)
				}
			}
			for _, a := range c.mismatch {
				if re.MatchString(a) {
					t.Errorf("%s matches %s", m, a)
				}
			}
		})
	}
}

// unquoteRE reads a PromQL double-quoted string back.
func unquoteRE(t *testing.T, s string) string {
	t.Helper()
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		t.Fatalf("not quoted: %s", s)
	}
	return strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(s[1 : len(s)-1])
}

// Route rows are keyed by the client resource and RouteLabels; their
// columns read the route metrics, never the HTTP ones.
func TestRouteColumnsFill(t *testing.T) {
	by := append([]string{LabelNamespace, LabelWorkload}, RouteLabels...)
	got := ColRouteSuccessRate.Fill([]string{eq("direction", "outbound")}, by, time.Minute)
	want := `sum by (namespace,workload,service,route,rule,dst_service) (rate(trellis_route_requests_total{direction="outbound",status_class!~"5xx|0xx|cancelled"}[60s])) / ` +
		`sum by (namespace,workload,service,route,rule,dst_service) (rate(trellis_route_requests_total{direction="outbound",status_class!="cancelled"}[60s]))`
	if got != want {
		t.Errorf("Fill = %s\nwant %s", got, want)
	}
	for _, c := range RouteColumns {
		if strings.Contains(c.Expr, "trellis_response") || !strings.Contains(c.Expr, "trellis_route_") {
			t.Errorf("%s: %s does not read the route metrics only", c.Name, c.Expr)
		}
	}
}
