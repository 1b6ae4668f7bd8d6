package vizcmd

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/viz/model"
)

// routeRows are an inbound row and an outbound route's rule with its
// backend, as viz/prom answers them.
func routeRows() []model.RouteStat {
	f := func(v float64) *float64 { return &v }
	web := model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}
	return []model.RouteStat{
		{Resource: web, Direction: model.DirectionInbound, Route: "[default]", Authority: "web.demo.svc.cluster.local:80",
			Golden: model.Golden{RPS: 10, SuccessRate: f(1), P50Ms: f(2), P95Ms: f(4), P99Ms: f(5)}},
		{Resource: web, Direction: model.DirectionOutbound, Route: "demo/books-split", Rule: "0",
			Authority: "books.demo.svc.cluster.local:80", Backend: "books-v2.demo.svc.cluster.local:80",
			Golden: model.Golden{RPS: 4, SuccessRate: f(0.75), P50Ms: f(37.5)}},
	}
}

// Every format of `trellis routes` says which side each row comes from,
// and names the outbound route's service, rule and backend; structured
// output reads back as the rows.
func TestRoutesFormats(t *testing.T) {
	rows := routeRows()
	doc := RoutesDoc{Source: "prometheus", Where: "http://127.0.0.1:9090", Window: "1m0s", Routes: rows}
	text := func(w io.Writer) error { return writeRoutes(w, rows) }
	for _, f := range []output.Format{output.Text, output.JSON, output.YAML} {
		t.Run(string(f), func(t *testing.T) {
			var b bytes.Buffer
			if err := output.Write(&b, f, doc, text); err != nil {
				t.Fatal(err)
			}
			var back RoutesDoc
			switch f {
			case output.Text:
				checkRoutesText(t, b.String())
				return
			case output.JSON:
				if err := json.Unmarshal(b.Bytes(), &back); err != nil {
					t.Fatal(err)
				}
			case output.YAML:
				if err := yaml.Unmarshal(b.Bytes(), &back); err != nil {
					t.Fatal(err)
				}
			}
			if len(back.Routes) != 2 || back.Routes[0].Direction != "inbound" || back.Routes[1].Direction != "outbound" ||
				back.Routes[1].Rule != "0" || back.Routes[1].Backend != rows[1].Backend || back.Routes[1].Authority != rows[1].Authority ||
				back.Routes[1].P99Ms != nil || *back.Routes[1].SuccessRate != 0.75 {
				t.Errorf("%s read back %+v\n%s", f, back.Routes, b.String())
			}
			for _, key := range []string{"direction", "rule", "backend"} {
				if !strings.Contains(b.String(), key) {
					t.Errorf("%s has no %q:\n%s", f, key, b.String())
				}
			}
		})
	}
}

func checkRoutesText(t *testing.T, out string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("text: %d lines:\n%s", len(lines), out)
	}
	for i, want := range [][]string{
		{"NAMESPACE", "NAME", "DIRECTION", "AUTHORITY", "ROUTE", "RULE", "BACKEND", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"},
		{"demo", "deploy/web", "inbound", "web.demo.svc.cluster.local:80", "[default]", "-", "-", "100.00%", "10.00", "2.0ms", "4.0ms", "5.0ms"},
		{"demo", "deploy/web", "outbound", "books.demo.svc.cluster.local:80", "demo/books-split", "0", "books-v2.demo.svc.cluster.local:80", "75.00%", "4.00", "37.5ms", "-", "-"},
	} {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("text line %d:\n got %q\nwant %q", i, got, want)
		}
	}
}

// The help shows an example of each output format.
func TestRoutesHelpExamples(t *testing.T) {
	ex := NewRoutes().Example
	for _, want := range []string{"trellis routes deploy/", "--to svc/", "-o json", "-o yaml", "trellis routes svc"} {
		if !strings.Contains(ex, want) {
			t.Errorf("routes --help examples lack %q:\n%s", want, ex)
		}
	}
}
