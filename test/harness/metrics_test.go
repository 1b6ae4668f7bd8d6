package harness

import (
	"strings"
	"testing"
)

const sample = `# TYPE trellis_requests_total counter
trellis_requests_total{direction="outbound",dst_service="a:80",tls="true"} 3
trellis_requests_total{direction="outbound",dst_service="b:80",tls="true"} 4
trellis_requests_total{direction="inbound",dst_service="a:80",tls="false"} 5
# TYPE trellis_responses_total counter
trellis_responses_total{direction="outbound",grpc_status="",status_code="200"} 7
trellis_responses_total{direction="outbound",grpc_status="0",status_code="200"} 2
# TYPE trellis_endpoints gauge
trellis_endpoints{dst_service="a:80"} 2
# TYPE trellis_response_latency_seconds histogram
trellis_response_latency_seconds_bucket{direction="outbound",le="0.1"} 6
trellis_response_latency_seconds_bucket{direction="outbound",le="+Inf"} 9
trellis_response_latency_seconds_sum{direction="outbound"} 0.5
trellis_response_latency_seconds_count{direction="outbound"} 9
`

func TestMetricsSum(t *testing.T) {
	ms, err := ParseMetrics(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		metric    string
		labels    map[string]string
		want      float64
		wantFound bool
	}{
		{"all series", "trellis_requests_total", nil, 12, true},
		{"one label", "trellis_requests_total", map[string]string{"direction": "outbound"}, 7, true},
		{"two labels", "trellis_requests_total", map[string]string{"direction": "outbound", "dst_service": "b:80"}, 4, true},
		{"no match", "trellis_requests_total", map[string]string{"direction": "sideways"}, 0, false},
		{"absent label wanted", "trellis_requests_total", map[string]string{"peer_identity": "x"}, 0, false},
		{"empty value matches empty", "trellis_responses_total", map[string]string{"grpc_status": ""}, 7, true},
		{"gauge", "trellis_endpoints", map[string]string{"dst_service": "a:80"}, 2, true},
		{"histogram count", "trellis_response_latency_seconds", map[string]string{"direction": "outbound"}, 9, true},
		{"absent metric", "trellis_nothing", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := ms.Sum(tt.metric, tt.labels)
			if got != tt.want || found != tt.wantFound {
				t.Errorf("Sum(%s, %v) = %g, %v; want %g, %v", tt.metric, tt.labels, got, found, tt.want, tt.wantFound)
			}
		})
	}
	if s := ms.Series("trellis_endpoints"); s != `trellis_endpoints{dst_service="a:80"} 2` {
		t.Errorf("Series = %q", s)
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("trellis_x{a=} 1\n")); err == nil {
		t.Error("parsed a malformed line without error")
	}
}

func TestStoreMarshal(t *testing.T) {
	s := Store{
		Services: []Service{{Name: "echo", Namespace: "e2e", Ports: []ServicePort{{Port: 80, Protocol: "opaque"}}}},
		Workloads: []Workload{{Name: "w", Namespace: "e2e", ServiceAccount: "sa", Token: NewToken(), ProxyAddr: "127.0.0.1:1",
			Endpoints: []Endpoint{{Service: "echo", Port: 80, TargetPort: 8080}}}},
	}
	b, err := s.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"serviceAccount: sa", "proxyAddr: 127.0.0.1:1", "targetPort: 8080", "protocol: opaque"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("store YAML lacks %q:\n%s", want, b)
		}
	}
	c := s.Clone()
	c.Workloads[0].Endpoints = nil
	if len(s.Workloads[0].Endpoints) != 1 {
		t.Error("Clone shares endpoints with the original")
	}
	if tok := NewToken(); len(tok) != 32 || tok == NewToken() {
		t.Errorf("NewToken = %q, want 32 distinct hex digits", tok)
	}
}

func TestPortsDistinct(t *testing.T) {
	var ps Ports
	seen := map[string]bool{}
	for range 50 {
		a := ps.Addr(t)
		if seen[a] {
			t.Fatalf("address %s handed out twice", a)
		}
		seen[a] = true
	}
}
