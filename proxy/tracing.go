package proxy

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/proxy/trace"
)

// traceConfig is the tracing stage's configuration.
func (c *Config) traceConfig(reg prometheus.Registerer, log *slog.Logger) trace.Config {
	return trace.Config{
		Collector: c.TraceCollector, CAFile: c.TraceCollectorCA, SampleRatio: c.TraceSampleRatio,
		Workload: c.Workload, Identity: c.Identity, Pod: c.PodName, Registerer: reg, Logger: log,
	}
}

// shutdownTracer sends the spans still queued, for a few seconds at most:
// an unreachable collector does not hold the proxy's exit.
func shutdownTracer(t *trace.Tracer, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("trace export at shutdown", "err", err)
	}
}
