package demo

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/viz/stats"
)

const booksProxy = `# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="200",tls="true"} 45
trellis_responses_total{classification="failure",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="500",tls="true"} 5
trellis_responses_total{classification="success",direction="outbound",dst_service="authors.demo:80",grpc_status="0",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",status_code="200",tls="true"} 45
trellis_responses_total{classification="success",direction="outbound",dst_service="static.demo:80",grpc_status="",peer_identity="",status_code="200",tls="false"} 10
# TYPE trellis_response_latency_seconds histogram
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.001"} 0
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.005"} 25
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.05"} 50
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="+Inf"} 50
trellis_response_latency_seconds_sum{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 0.3
trellis_response_latency_seconds_count{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 50
`

func report(t *testing.T) Report {
	t.Helper()
	snap, err := stats.Parse(strings.NewReader(booksProxy))
	if err != nil {
		t.Fatal(err)
	}
	// Against an empty baseline the delta is everything; loadgen serves
	// nothing.
	return BuildReport([]string{"books-v1", "loadgen"}, map[string]stats.Snapshot{"books-v1": snap.Sub(nil)}, 10)
}

func TestWriteTables(t *testing.T) {
	var b bytes.Buffer
	if err := WriteTables(&b, report(t), "title"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"WORKLOAD", "MTLS",
		"books-v1  90.00%   5.0  5.00ms  46ms  49ms",
		"loadgen   -        0.0  -       -     -",
		"books-v1  authors.demo:80  100.00%  4.5  -    -    -    yes (spiffe://cluster.local/ns/demo/sa/authors)",
		"books-v1  static.demo:80   100.00%  1.0  -    -    -    no",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func TestSummaryJSON(t *testing.T) {
	var b bytes.Buffer
	if err := output.Write(&b, output.JSON, report(t).Summary(), nil); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Duration  float64 `json:"duration_seconds"`
		Workloads []struct {
			Name        string   `json:"name"`
			SuccessRate *float64 `json:"success_rate"`
			RPS         float64  `json:"rps"`
			P50         *float64 `json:"p50_ms"`
			P99         *float64 `json:"p99_ms"`
			Requests    int      `json:"requests"`
		} `json:"workloads"`
		Edges []struct {
			Source, Destination string
			Peer                string   `json:"peer_identity"`
			MTLS                bool     `json:"mtls"`
			SuccessRate         *float64 `json:"success_rate"`
			Requests            int      `json:"requests"`
		} `json:"edges"`
	}
	// json.Unmarshal refuses trailing data, so this also checks that
	// stdout holds exactly one document.
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	for _, key := range []string{`"p95_ms"`, `"peer_identity"`, `"duration_seconds"`} {
		if !strings.Contains(b.String(), key) {
			t.Errorf("JSON lacks %s", key)
		}
	}
	if got.Duration != 10 || len(got.Workloads) != 2 || len(got.Edges) != 2 {
		t.Fatalf("summary = %+v", got)
	}
	w := got.Workloads[0]
	if w.Name != "books-v1" || w.SuccessRate == nil || *w.SuccessRate != 0.9 || w.RPS != 5 || w.Requests != 50 || w.P50 == nil || *w.P50 != 5 {
		t.Errorf("books-v1 = %+v", w)
	}
	if lg := got.Workloads[1]; lg.SuccessRate != nil || lg.P99 != nil || lg.Requests != 0 {
		t.Errorf("loadgen without traffic = %+v, want nulls", lg)
	}
	e := got.Edges[0]
	if e.Source != "books-v1" || e.Destination != "authors.demo:80" || !e.MTLS || e.Peer != "spiffe://cluster.local/ns/demo/sa/authors" || *e.SuccessRate != 1 || e.Requests != 45 {
		t.Errorf("edge = %+v", e)
	}
	if got.Edges[1].MTLS {
		t.Errorf("plaintext edge reported as mTLS: %+v", got.Edges[1])
	}
}
