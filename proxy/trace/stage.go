package trace

import (
	"context"
	"net/http"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// stage records one span per request and names it in the traceparent the
// request is passed on with.
type stage struct {
	t    *Tracer
	next pipeline.Handler
	kind oteltrace.SpanKind
}

func (s *stage) Serve(x *pipeline.Exchange) error {
	if x.R.Method == http.MethodConnect {
		// A TCP tunnel, not a request: nothing to propagate into.
		return s.next.Serve(x)
	}
	hdr := x.R.Header
	p := Extract(hdr)
	ctx := context.Background()
	if p.From != None {
		ctx = oteltrace.ContextWithRemoteSpanContext(ctx, oteltrace.NewSpanContext(oteltrace.SpanContextConfig{
			TraceID: p.TraceID, SpanID: p.SpanID, TraceFlags: flags(p.Sampled), Remote: true,
		}))
	}
	if !p.Deferred {
		ctx = context.WithValue(ctx, decidedKey{}, p.Sampled)
	}
	_, span := s.t.tracer.Start(ctx, spanName(x.R.Method), oteltrace.WithSpanKind(s.kind), oteltrace.WithTimestamp(x.Start))
	sc := span.SpanContext()
	hdr[HeaderTraceparent] = []string{FormatTraceparent(sc.TraceID(), sc.SpanID(), sc.IsSampled())}
	if p.From != W3C {
		// tracestate belongs to the traceparent it came with (W3C: a
		// vendor that could not parse traceparent discards it).
		delete(hdr, HeaderTracestate)
	}
	err := s.next.Serve(x)
	if span.IsRecording() {
		status, fail := outcome(x, err)
		span.SetAttributes(attributes(s.kind, s.t.identity, x, status, err)...)
		if code, desc := spanStatus(s.kind, status, x, fail); code != 0 {
			span.SetStatus(code, desc)
		}
	}
	span.End()
	return err
}

func flags(sampled bool) oteltrace.TraceFlags {
	if sampled {
		return oteltrace.FlagsSampled
	}
	return 0
}

// decidedKey carries the caller's sampling decision (a bool) when it made
// one; without it the ratio decides.
type decidedKey struct{}

// sampler honours the caller's decision and samples new traces (and B3
// callers that deferred) by ratio of the trace ID, so every proxy on a
// trace that nobody decided for decides alike.
type sampler struct{ ratio sdktrace.Sampler }

func (s sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if d, ok := p.ParentContext.Value(decidedKey{}).(bool); ok {
		if d {
			return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample}
		}
		return sdktrace.SamplingResult{Decision: sdktrace.Drop}
	}
	return s.ratio.ShouldSample(p)
}

func (s sampler) Description() string { return "TrellisParentBased{" + s.ratio.Description() + "}" }
