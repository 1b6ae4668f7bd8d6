package outbound_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"

	"github.com/trellis-mesh/trellis/proxy/internal/grpctest"
	"github.com/trellis-mesh/trellis/proxy/trace"
)

// otlpSink is an OTLP/gRPC trace collector that counts and discards: the
// export's encoding and sending are the proxies', measured with them.
type otlpSink struct {
	coltrace.UnimplementedTraceServiceServer
	spans atomic.Int64
}

func (s *otlpSink) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			s.spans.Add(int64(len(ss.GetSpans())))
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// tracingPair is a pair whose proxies trace with ratio to the collector at
// addr (ratio < 0: tracing off).
func tracingPair(b *testing.B, addr string, ratio float64) *pair {
	if ratio < 0 {
		return newPair(b, pairOpts{app: benchApp()})
	}
	tracer := func(id string) *trace.Tracer {
		t, err := trace.New(context.Background(), trace.Config{Collector: addr, SampleRatio: ratio, Identity: id, QueueSize: 1 << 16})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = t.Shutdown(context.Background()) })
		return t
	}
	in, out := tracer(serverID.String()), tracer(clientID.String())
	return newPair(b, pairOpts{app: benchApp(), inTrace: in.Inbound(), outTrace: out.Outbound()})
}

// BenchmarkTracingCost: the CPU per request of a mesh round trip (client,
// outbound, mTLS, inbound, app, all in this process, and the export to an
// in-process OTLP collector) with tracing off, on with 1 % of new traces
// sampled, and on with all sampled. Rounds interleave the configurations;
// the medians are printed as ratios against off. Run with -benchtime 1x.
func BenchmarkTracingCost(b *testing.B) {
	sink := &otlpSink{}
	addr, _ := grpctest.Serve(b, "127.0.0.1:0", func(gs *grpc.Server) { coltrace.RegisterTraceServiceServer(gs, sink) })
	configs := []struct {
		name  string
		ratio float64
	}{{"off", -1}, {"1%", 0.01}, {"100%", 1}}
	pairs := make([]*pair, len(configs))
	for i, c := range configs {
		pairs[i] = tracingPair(b, addr, c.ratio)
		burst(b, pairs[i], 800) // warm: connections, the exporter's
	}
	const rounds, perRound = 7, 4000
	cpu := make([][]time.Duration, len(configs))
	for range rounds {
		for i := range configs {
			cpu[i] = append(cpu[i], burst(b, pairs[i], perRound))
		}
	}
	med := func(d []time.Duration) time.Duration { s := slices.Clone(d); slices.Sort(s); return s[len(s)/2] }
	base := med(cpu[0])
	for i, c := range configs {
		m := med(cpu[i])
		b.Logf("tracing %-4s  round trip cpu/request %7.1f µs  ratio %.3f (%+.1f %%)", c.name,
			float64(m.Nanoseconds())/1e3, float64(m)/float64(base), 100*(float64(m)/float64(base)-1))
		b.ReportMetric(float64(m)/float64(base), "ratio-"+c.name)
	}
	b.Logf("spans received by the collector: %d", sink.spans.Load())
}
