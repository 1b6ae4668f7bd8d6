package metrics

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		status    int
		grpc      string
		streamErr bool
		want      string
	}{
		{200, "", false, ClassSuccess},
		{404, "", false, ClassSuccess},
		{431, "", false, ClassSuccess},
		{500, "", false, ClassFailure},
		{502, "", false, ClassFailure},
		{0, "", false, ClassFailure},
		{200, "", true, ClassFailure},
		{200, "0", false, ClassSuccess},
		{200, "14", false, ClassFailure},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.grpc, tt.streamErr); got != tt.want {
			t.Errorf("Classify(%d, %q, %v) = %s, want %s", tt.status, tt.grpc, tt.streamErr, got, tt.want)
		}
	}
}

func TestCancelledIsNeitherSuccessNorFailure(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := m.HTTP(Key{Direction: Inbound, DstService: "echo:80"})
	h.Cancelled(0)
	h.Cancelled(0)
	h.Cancelled(200)
	h.Response(200, "", false)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			k := mf.GetName()
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "classification" || lp.GetName() == "status_code" {
					k += " " + lp.GetName() + "=" + lp.GetValue()
				}
			}
			if mt.GetCounter() != nil {
				got[k] += mt.GetCounter().GetValue()
			}
			if mt.GetHistogram() != nil {
				got[k] += float64(mt.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"trellis_responses_total classification=cancelled status_code=0":   2,
		"trellis_responses_total classification=cancelled status_code=200": 1,
		"trellis_responses_total classification=success status_code=200":   1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %g, want %g (all: %v)", k, got[k], v, got)
		}
	}
	if got["trellis_responses_total classification=failure status_code=0"] != 0 {
		t.Errorf("cancelled streams counted as failures: %v", got)
	}
	// A cancelled stream's wait is the client's patience, not latency.
	if n := got["trellis_response_latency_seconds"]; n != 0 {
		t.Errorf("%g latency observations for cancelled streams", n)
	}
}

// TestRouteLabelsBounded: dst_service comes from a caller's Host; random
// names must not grow the label sets (and the proxy's memory) without
// bound, and a hostile grpc-status must not either.
func TestRouteLabelsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < MaxRoutes+500; i++ {
		h := m.HTTP(Key{Direction: Inbound, DstService: "random-" + strconv.Itoa(i)})
		h.Requests.Inc()
		h.Response(200, "junk-"+strconv.Itoa(i), false)
		m.TCP(Key{Direction: Inbound, DstService: "tcp-" + strconv.Itoa(i)}).Open()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	others := 0
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			series[mf.GetName()]++
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "grpc_status" && lp.GetValue() != "" && lp.GetValue() != "other" {
					t.Fatalf("grpc_status %q kept as a label", lp.GetValue())
				}
				if lp.GetName() == "dst_service" && lp.GetValue() == OtherService && mf.GetName() == "trellis_requests_total" {
					others++
				}
			}
		}
	}
	if n := series["trellis_requests_total"]; n > MaxRoutes+1 {
		t.Errorf("%d request series for %d random hosts, want at most %d", n, MaxRoutes+500, MaxRoutes+1)
	}
	if n := series["trellis_tcp_open_total"]; n > MaxRoutes+1 {
		t.Errorf("%d tcp series, want at most %d", n, MaxRoutes+1)
	}
	if others != 1 {
		t.Errorf("%d %s request series, want 1", others, OtherService)
	}
}

func TestGRPCCode(t *testing.T) {
	for in, want := range map[string]string{"": "", "0": "0", "16": "16", "17": "other", "-1": "other", "01": "other", "x": "other", "2 ": "other"} {
		if got := grpcCode(in); got != want {
			t.Errorf("grpcCode(%q) = %q, want %q", in, got, want)
		}
	}
}
