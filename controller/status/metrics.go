package status

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Results of a status write, the values of the result label.
const (
	ResultWritten  = "written"
	ResultConflict = "conflict" // the object changed meanwhile; the key is retried
	ResultNotFound = "not_found"
	ResultError    = "error"
)

// Metrics count what the status writers do. A nil *Metrics counts nothing.
type Metrics struct {
	writes *prometheus.CounterVec
	leader prometheus.Gauge
}

// NewMetrics registers trellis_controller_status_writes_total{kind,result}
// and trellis_controller_status_leader on reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_status_writes_total",
			Help: "Status updates sent to the API server, by object kind and result (written, conflict, not_found, error). Only changed conditions are written, so a steady cluster adds nothing.",
		}, []string{"kind", "result"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trellis_controller_status_leader",
			Help: "1 while this replica is the one writing status (the elected leader with --ha), else 0.",
		}),
	}
	for _, c := range []prometheus.Collector{m.writes, m.leader} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("status metrics: %w", err)
		}
	}
	return m, nil
}

// Wrote counts one status update of an object of kind that returned err.
func (m *Metrics) Wrote(kind string, err error) {
	if m == nil {
		return
	}
	m.writes.WithLabelValues(kind, result(err)).Inc()
}

func result(err error) string {
	switch {
	case err == nil:
		return ResultWritten
	case apierrors.IsConflict(err):
		return ResultConflict
	case apierrors.IsNotFound(err):
		return ResultNotFound
	}
	return ResultError
}

// Leading wraps an Elector so the leader gauge is 1 while lead runs.
func (m *Metrics) Leading(e Elector) Elector {
	if m == nil {
		return e
	}
	return leading{e, m.leader}
}

type leading struct {
	Elector
	gauge prometheus.Gauge
}

func (l leading) Run(ctx context.Context, lead func(ctx context.Context)) {
	l.Elector.Run(ctx, func(ctx context.Context) {
		l.gauge.Set(1)
		defer l.gauge.Set(0)
		lead(ctx)
	})
}
