package status

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestWritesCountedByResult(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	gr := schema.GroupResource{Group: "policy.trellis.io", Resource: "servers"}
	for _, tt := range []struct {
		kind string
		err  error
	}{
		{"Server", nil},
		{"Server", nil},
		{"Server", apierrors.NewConflict(gr, "web", errors.New("modified"))},
		{"AuthorizationPolicy", apierrors.NewNotFound(gr, "gone")},
		{"RateLimit", errors.New("connection refused")},
		{"RateLimit", context.DeadlineExceeded},
	} {
		m.Wrote(tt.kind, tt.err)
	}
	for _, tt := range []struct {
		kind, result string
		want         float64
	}{
		{"Server", ResultWritten, 2},
		{"Server", ResultConflict, 1},
		{"AuthorizationPolicy", ResultNotFound, 1},
		{"RateLimit", ResultError, 2},
		{"RateLimit", ResultWritten, 0},
	} {
		if got := value(t, m.writes.WithLabelValues(tt.kind, tt.result)); got != tt.want {
			t.Errorf("writes{kind=%q,result=%q} = %v, want %v", tt.kind, tt.result, got, tt.want)
		}
	}
	var nilM *Metrics
	nilM.Wrote("Server", nil) // must not panic: metrics are optional
}

// The leader gauge is 1 exactly while lead runs.
func TestLeaderGauge(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var during float64
	m.Leading(Always{}).Run(context.Background(), func(context.Context) { during = value(t, m.leader) })
	if during != 1 {
		t.Errorf("leader gauge %v while leading, want 1", during)
	}
	if after := value(t, m.leader); after != 0 {
		t.Errorf("leader gauge %v after leading, want 0", after)
	}
}

func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}
