// Package trace is the proxies' distributed tracing stage: it reads the
// caller's span from W3C traceparent (or B3, single or multi header),
// records one span per request (server inbound, client outbound) with the
// mesh's attributes, sends it to an OTLP/gRPC collector, and passes the
// request on with traceparent naming that span, so the next hop's span is
// its child. With no collector configured the stage is pipeline.Identity:
// no header is read or written, nothing is allocated. See
// docs/observability.md, "Tracing".
package trace

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// Config configures tracing.
type Config struct {
	// Collector is the OTLP/gRPC collector's host:port; "" turns tracing
	// off.
	Collector string
	// CAFile, when set, is a PEM bundle: the collector is reached over TLS
	// and must present a certificate for its host signed by one of these.
	// Empty: plain text.
	CAFile string
	// SampleRatio is the fraction of new traces sampled, in [0, 1]; a
	// caller's decision (traceparent's sampled flag, B3's state) is always
	// honoured.
	SampleRatio float64
	// Identity is this proxy's SPIFFE ID: its service account names the
	// service spans are reported under (service.name), so a workload's
	// pods share one. Workload and Pod are recorded too, when known.
	Identity, Workload, Pod string
	// QueueSize bounds the spans waiting for export (default 2048): when
	// it is full, spans are dropped and counted, never waited for.
	QueueSize  int
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Validate reports a configuration error, naming the flag.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 || c.SampleRatio != c.SampleRatio {
		return fmt.Errorf("--trace-sample-ratio must be between 0 and 1, got %v", c.SampleRatio)
	}
	if c.Collector == "" {
		if c.CAFile != "" {
			return errors.New("--trace-collector-ca needs --trace-collector")
		}
		return nil
	}
	if _, port, err := net.SplitHostPort(c.Collector); err != nil || port == "" {
		return fmt.Errorf("--trace-collector must be host:port, got %q", c.Collector)
	}
	return nil
}

// Tracer records the proxy's spans. A nil *Tracer is tracing off.
type Tracer struct {
	tp       *sdktrace.TracerProvider
	tracer   oteltrace.Tracer
	identity string
}

// New starts tracing as cfg says, or returns nil when cfg.Collector is
// empty. The exporter connects lazily: an unreachable collector costs the
// requests nothing (its spans are dropped and counted).
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Collector == "" {
		return nil, nil
	}
	exp, err := newExporter(ctx, cfg.Collector, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	return withExporter(cfg, exp)
}

// withExporter is a Tracer sending its spans to exp.
func withExporter(cfg Config, exp sdktrace.SpanExporter) (*Tracer, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	q, err := newQueue(exp, cfg.QueueSize, cfg.Registerer, cfg.Logger)
	if err != nil {
		return nil, err
	}
	// Attributes are bounded (the request's own ones in attributes, these
	// for the rest): a sampled span is a few KiB at most, so the queue's
	// memory and a batch's size (under the collector's 4 MiB gRPC limit)
	// stay bounded whatever callers send.
	limits := sdktrace.NewSpanLimits()
	limits.AttributeValueLengthLimit = maxAttrLen
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithRawSpanLimits(limits),
		sdktrace.WithSampler(sampler{ratio: sdktrace.TraceIDRatioBased(cfg.SampleRatio)}),
		sdktrace.WithSpanProcessor(q),
		sdktrace.WithResource(resource.NewSchemaless(resourceAttrs(cfg)...)),
	)
	return &Tracer{tp: tp, tracer: tp.Tracer("github.com/trellis-mesh/trellis/proxy"), identity: cfg.Identity}, nil
}

// resourceAttrs describe the proxy: the workload as service.name (what
// Jaeger lists), its identity and pod.
func resourceAttrs(cfg Config) []attribute.KeyValue {
	svc := cfg.Identity[strings.LastIndexByte(cfg.Identity, '/')+1:]
	if svc == "" {
		svc = "trellis-proxy"
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", svc), attribute.String("trellis.identity", cfg.Identity)}
	if cfg.Workload != "" {
		attrs = append(attrs, attribute.String("trellis.workload", cfg.Workload))
	}
	if cfg.Pod != "" {
		attrs = append(attrs, attribute.String("k8s.pod.name", cfg.Pod))
	}
	return attrs
}

// Shutdown exports what is queued, within ctx.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.tp.Shutdown(ctx)
}

// Inbound is the inbound chain's stage (server spans); pipeline.Identity
// when tracing is off.
func (t *Tracer) Inbound() pipeline.Layer {
	if t == nil {
		return pipeline.Identity
	}
	return func(next pipeline.Handler) pipeline.Handler {
		return &stage{t: t, next: next, kind: oteltrace.SpanKindServer}
	}
}

// Outbound is the outbound chain's stage (client spans); pipeline.Identity
// when tracing is off.
func (t *Tracer) Outbound() pipeline.Layer {
	if t == nil {
		return pipeline.Identity
	}
	return func(next pipeline.Handler) pipeline.Handler {
		return &stage{t: t, next: next, kind: oteltrace.SpanKindClient}
	}
}
