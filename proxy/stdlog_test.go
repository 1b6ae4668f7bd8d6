package proxy

import (
	"bytes"
	stdlog "log"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// x/net's HTTP/2 client side prints a misbehaving peer's errors with the
// standard log package: captured, they reach neither the output at info
// nor unstructured, and are counted.
func TestCaptureStdLog(t *testing.T) {
	var out bytes.Buffer
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	prev := stdlog.Writer()
	restore := captureStdLog(slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo})), m)
	for range 5 {
		stdlog.Printf("protocol error: received DATA before a HEADERS frame")
	}
	restore()
	if stdlog.Writer() != prev {
		t.Error("the standard log's output was not restored")
	}
	if out.Len() != 0 {
		t.Errorf("library lines at info:\n%s", out.String())
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got float64
	for _, mf := range mfs {
		if mf.GetName() != "trellis_protocol_errors_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := ""
			for _, lp := range mt.GetLabel() {
				labels += lp.GetName() + "=" + lp.GetValue() + " "
			}
			if strings.Contains(labels, "cause=protocol_error") && strings.Contains(labels, "direction=process") {
				got += mt.GetCounter().GetValue()
			}
		}
	}
	if got != 5 {
		t.Errorf("trellis_protocol_errors_total{direction=process,cause=protocol_error} = %g, want 5", got)
	}
}
