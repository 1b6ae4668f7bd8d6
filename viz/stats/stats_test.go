package stats

import (
	"math"
	"strings"
	"testing"
)

// A scrape shaped like what trellis-proxy's client_golang registry writes.
const scrape1 = `# HELP trellis_responses_total Responses ended.
# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="200",tls="true"} 90
trellis_responses_total{classification="failure",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="500",tls="true"} 10
trellis_responses_total{classification="success",direction="outbound",dst_service="authors.demo:80",grpc_status="0",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",status_code="200",tls="true"} 40
trellis_responses_total{classification="failure",direction="outbound",dst_service="authors.demo:80",grpc_status="14",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",status_code="200",tls="true"} 0
trellis_responses_total{classification="failure",direction="outbound",dst_service="authors.demo:80",grpc_status="",peer_identity="",status_code="0",tls="false"} 2
# HELP trellis_response_latency_seconds Latency.
# TYPE trellis_response_latency_seconds histogram
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.001"} 0
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.01"} 50
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.1"} 100
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="+Inf"} 100
trellis_response_latency_seconds_sum{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 2.5
trellis_response_latency_seconds_count{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 100
trellis_response_latency_seconds_bucket{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true",le="0.001"} 10
trellis_response_latency_seconds_bucket{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true",le="0.01"} 40
trellis_response_latency_seconds_bucket{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true",le="0.1"} 40
trellis_response_latency_seconds_bucket{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true",le="+Inf"} 40
trellis_response_latency_seconds_sum{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true"} 0.2
trellis_response_latency_seconds_count{direction="outbound",dst_service="authors.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",tls="true"} 40
# HELP trellis_tcp_open_connections Open connections.
# TYPE trellis_tcp_open_connections gauge
trellis_tcp_open_connections{direction="inbound",dst_service="books.demo:80",peer_identity="",tls="false"} 3
`

// The same proxy a while later.
const scrape2 = `# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="200",tls="true"} 150
trellis_responses_total{classification="failure",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/web",status_code="500",tls="true"} 50
trellis_responses_total{classification="success",direction="outbound",dst_service="authors.demo:80",grpc_status="0",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",status_code="200",tls="true"} 140
trellis_responses_total{classification="failure",direction="outbound",dst_service="authors.demo:80",grpc_status="",peer_identity="",status_code="0",tls="false"} 2
# TYPE trellis_response_latency_seconds histogram
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.001"} 0
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.01"} 50
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="0.1"} 150
trellis_response_latency_seconds_bucket{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true",le="+Inf"} 200
trellis_response_latency_seconds_sum{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 60
trellis_response_latency_seconds_count{direction="inbound",dst_service="books.demo:80",peer_identity="spiffe://cluster.local/ns/demo/sa/web",tls="true"} 200
`

func mustParse(t *testing.T, text string) Snapshot {
	t.Helper()
	s, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return s
}

func approx(a, b float64) bool {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.IsNaN(a) && math.IsNaN(b)
	}
	return math.Abs(a-b) < 1e-9
}

func TestParseFoldsLabels(t *testing.T) {
	s := mustParse(t, scrape1)
	in := s.Total(Inbound)
	if in.Success != 90 || in.Failure != 10 {
		t.Errorf("inbound success/failure = %v/%v, want 90/10", in.Success, in.Failure)
	}
	if got := in.SuccessRate(); !approx(got, 0.9) {
		t.Errorf("inbound success rate = %v, want 0.9", got)
	}
	if in.Latency.Count != 100 || in.Latency.Buckets[0.01] != 50 {
		t.Errorf("inbound latency = %+v, want count 100 and 50 in le=0.01", in.Latency)
	}
	if _, ok := in.Latency.Buckets[math.Inf(1)]; ok {
		t.Errorf("the +Inf bucket must be folded into Count, got %v", in.Latency.Buckets)
	}
	out := s.Total(Outbound)
	if out.Success != 40 || out.Failure != 2 {
		t.Errorf("outbound success/failure = %v/%v, want 40/2", out.Success, out.Failure)
	}
}

func TestParseRejectsGarbage(t *testing.T) {
	for _, in := range []string{
		"trellis_responses_total{direction=\"inbound\" 3\n",
		"# TYPE trellis_responses_total counter\ntrellis_responses_total abc\n",
	} {
		if _, err := Parse(strings.NewReader(in)); err == nil {
			t.Errorf("Parse(%q) = nil error, want one", in)
		}
	}
}

func TestParseEmpty(t *testing.T) {
	s := mustParse(t, "")
	if len(s) != 0 {
		t.Errorf("empty scrape gave %d keys", len(s))
	}
	if !math.IsNaN(s.Total(Inbound).SuccessRate()) {
		t.Errorf("success rate of nothing must be NaN")
	}
}

func TestSubDeltas(t *testing.T) {
	d := mustParse(t, scrape2).Sub(mustParse(t, scrape1))
	in := d.Total(Inbound)
	if in.Success != 60 || in.Failure != 40 {
		t.Fatalf("delta success/failure = %v/%v, want 60/40", in.Success, in.Failure)
	}
	if got := in.Rate(10); !approx(got, 10) {
		t.Errorf("rate over 10s = %v, want 10", got)
	}
	if in.Latency.Count != 100 || in.Latency.Buckets[0.01] != 0 || in.Latency.Buckets[0.1] != 50 {
		t.Errorf("delta histogram = %+v", in.Latency)
	}
	// Delta buckets: 0 <= 1ms, 0 <= 10ms, 50 <= 100ms, 100 total. The median
	// (rank 50) is at the top of the 10ms-100ms bucket; p99 lies in +Inf, so
	// it is the highest finite bound.
	if got := in.Quantile(0.5); !approx(got, 0.1) {
		t.Errorf("delta p50 = %v, want 0.1", got)
	}
	if got := in.Quantile(0.99); !approx(got, 0.1) {
		t.Errorf("delta p99 = %v, want 0.1", got)
	}
	// The series that vanished from scrape2 is not in the delta, the one
	// that did not move has zero requests.
	for _, e := range d.Edges() {
		if !e.MTLS && e.Requests() != 0 {
			t.Errorf("unmoved plaintext edge has %v requests", e.Requests())
		}
	}
}

func TestSubCounterReset(t *testing.T) {
	// scrape1 after scrape2 looks like a restarted proxy: the current values
	// are the change.
	d := mustParse(t, scrape1).Sub(mustParse(t, scrape2))
	in := d.Total(Inbound)
	if in.Success != 90 || in.Failure != 10 || in.Latency.Count != 100 {
		t.Errorf("after reset got %v/%v/%v, want 90/10/100", in.Success, in.Failure, in.Latency.Count)
	}
}

func TestQuantile(t *testing.T) {
	h := func(count float64, kv ...float64) Histogram {
		b := map[float64]float64{}
		for i := 0; i+1 < len(kv); i += 2 {
			b[kv[i]] = kv[i+1]
		}
		return Histogram{Buckets: b, Count: count}
	}
	tests := []struct {
		name string
		q    float64
		h    Histogram
		want float64
	}{
		{"empty", 0.5, h(0, 0.1, 0), math.NaN()},
		{"no finite bucket", 0.5, h(10), math.NaN()},
		{"first bucket starts at zero", 0.5, h(10, 0.1, 10, 1, 10), 0.05},
		{"interpolates inside a bucket", 0.5, h(100, 0.01, 20, 0.1, 80), 0.01 + 0.09*(30.0/60.0)},
		{"p95", 0.95, h(100, 0.01, 50, 0.1, 90, 1, 100), 0.1 + 0.9*(5.0/10.0)},
		{"p99 in +Inf is the highest bound", 0.99, h(100, 0.01, 50, 0.1, 90), 0.1},
		{"unsorted map order does not matter", 0.5, h(4, 0.5, 4, 0.25, 2, 0.125, 0), 0.25},
		{"non-monotonic delta is fixed", 0.5, h(10, 0.01, 6, 0.1, 5), 0.01 * 5.0 / 6.0},
		{"q=0", 0, h(10, 0.1, 10), 0},
		{"q=1", 1, h(10, 0.1, 5, 0.2, 10), 0.2},
		{"q<0", -1, h(10, 0.1, 10), math.Inf(-1)},
		{"q>1", 2, h(10, 0.1, 10), math.Inf(1)},
		{"negative first bound", 0.5, h(10, -1, 10), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Quantile(tt.q, tt.h)
			if !approx(got, tt.want) && got != tt.want {
				t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
			}
		})
	}
}

func TestSuccessRate(t *testing.T) {
	tests := []struct {
		c    Counts
		want float64
	}{
		{Counts{}, math.NaN()},
		{Counts{Success: 5}, 1},
		{Counts{Failure: 5}, 0},
		{Counts{Success: 3, Failure: 1}, 0.75},
	}
	for _, tt := range tests {
		if got := tt.c.SuccessRate(); !approx(got, tt.want) {
			t.Errorf("%+v.SuccessRate() = %v, want %v", tt.c, got, tt.want)
		}
	}
	if got := (Counts{Success: 10}).Rate(0); !math.IsNaN(got) {
		t.Errorf("rate over an empty span = %v, want NaN", got)
	}
}

func TestEdgesGrouping(t *testing.T) {
	const text = `# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="outbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/books",status_code="200",tls="true"} 70
trellis_responses_total{classification="failure",direction="outbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/books",status_code="503",tls="true"} 30
trellis_responses_total{classification="failure",direction="outbound",dst_service="books.demo:80",grpc_status="",peer_identity="",status_code="502",tls="false"} 5
trellis_responses_total{classification="success",direction="outbound",dst_service="authors.demo:80",grpc_status="0",peer_identity="spiffe://cluster.local/ns/demo/sa/authors",status_code="200",tls="true"} 8
trellis_responses_total{classification="success",direction="inbound",dst_service="web.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/loadgen",status_code="200",tls="true"} 1000
trellis_responses_total{classification="success",direction="outbound",dst_service="books.demo:80",grpc_status="",peer_identity="spiffe://cluster.local/ns/demo/sa/books",status_code="200",tls="false"} 1
`
	edges := mustParse(t, text).Edges()
	type row struct {
		dst, peer string
		mtls      bool
		requests  float64
		sr        float64
	}
	want := []row{
		{"authors.demo:80", "spiffe://cluster.local/ns/demo/sa/authors", true, 8, 1},
		{"books.demo:80", "", false, 5, 0},
		{"books.demo:80", "spiffe://cluster.local/ns/demo/sa/books", true, 100, 0.7},
		// An identity on a non-TLS hop is not mTLS.
		{"books.demo:80", "spiffe://cluster.local/ns/demo/sa/books", false, 1, 1},
	}
	if len(edges) != len(want) {
		t.Fatalf("got %d edges, want %d: %+v", len(edges), len(want), edges)
	}
	for i, w := range want {
		e := edges[i]
		got := row{e.Destination, e.PeerIdentity, e.MTLS, e.Requests(), e.SuccessRate()}
		if got.dst != w.dst || got.peer != w.peer || got.mtls != w.mtls || got.requests != w.requests || !approx(got.sr, w.sr) {
			t.Errorf("edge %d = %+v, want %+v", i, got, w)
		}
	}
}

// Requests the client cancelled are neither a success nor a failure.
func TestCancelledNotAFailure(t *testing.T) {
	s := mustParse(t, `# TYPE trellis_responses_total counter
trellis_responses_total{classification="success",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="",status_code="200",tls="true"} 90
trellis_responses_total{classification="cancelled",direction="inbound",dst_service="books.demo:80",grpc_status="",peer_identity="",status_code="0",tls="true"} 1000
`)
	c := s[Key{Direction: Inbound, DstService: "books.demo:80", TLS: true}]
	if c == nil || c.Success != 90 || c.Failure != 0 {
		t.Fatalf("counts %+v, want 90 successes and no failure", c)
	}
}
