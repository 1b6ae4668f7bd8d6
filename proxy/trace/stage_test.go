package trace

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

const (
	local  = "spiffe://td/ns/demo/sa/web"
	remote = "spiffe://td/ns/demo/sa/books"
)

// app is the rest of the chain: it keeps the headers it was given and
// answers with status, or returns err.
type app struct {
	got    http.Header
	status int
	err    error
}

func (a *app) Serve(x *pipeline.Exchange) error {
	a.got = x.R.Header.Clone()
	if a.err != nil {
		return a.err
	}
	x.Attempts = 2
	x.Wrote(a.status, "", nil)
	return nil
}

func TestOffIsIdentity(t *testing.T) {
	var tr *Tracer
	end := &app{}
	for _, l := range []pipeline.Layer{tr.Inbound(), tr.Outbound()} {
		if reflect.ValueOf(l).Pointer() != reflect.ValueOf(pipeline.Identity).Pointer() {
			t.Fatal("tracing off is not pipeline.Identity")
		}
		if h := pipeline.Chain(end, l); h != pipeline.Handler(end) {
			t.Fatal("tracing off changed the chain")
		}
	}
	if tr, err := New(context.Background(), Config{SampleRatio: 1}); tr != nil || err != nil {
		t.Fatalf("no collector: tracer %v, err %v", tr, err)
	}
}

func newTestTracer(t *testing.T, ratio float64) (*Tracer, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tr, err := withExporter(Config{SampleRatio: ratio, Identity: local, Collector: "x:1"}, exp)
	if err != nil {
		t.Fatal(err)
	}
	return tr, exp
}

func serve(t *testing.T, tr *Tracer, out bool, h http.Header, end *app) {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "http://books:8080/books/1?token=secret", nil)
	r.Header = h
	x := &pipeline.Exchange{W: httptest.NewRecorder(), R: r, Start: time.Now()}
	l := tr.Inbound()
	if out {
		l = tr.Outbound()
		x.Key = metrics.Key{Direction: metrics.Outbound, DstService: "books:8080", PeerIdentity: remote, TLS: true}
	} else {
		x.Conn = pipeline.Conn{Peer: remote, TLS: true}
	}
	err := pipeline.Chain(end, l).Serve(x)
	if err != end.err {
		t.Fatalf("the stage returned %v, want the chain's %v", err, end.err)
	}
	if err := tr.tp.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestPropagation(t *testing.T) {
	parent := "00-" + tid + "-" + sid + "-01"
	tests := []struct {
		name      string
		ratio     float64
		h         http.Header
		sampled   bool
		sameTrace bool   // the forwarded trace ID is the caller's
		state     string // tracestate forwarded
	}{
		{"w3c sampled", 0, http.Header{"Traceparent": {parent}, "Tracestate": {"v=1"}}, true, true, "v=1"},
		{"w3c not sampled, ratio 1", 1, http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}, "Tracestate": {"v=1"}}, false, true, "v=1"},
		{"w3c malformed: new trace, tracestate dropped", 1, http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-0"}, "Tracestate": {"v=1"}}, true, false, ""},
		{"none, ratio 0", 0, http.Header{}, false, false, ""},
		{"none, ratio 1", 1, http.Header{}, true, false, ""},
		{"b3 deferred, ratio 1", 1, http.Header{"B3": {tid + "-" + sid}}, true, true, ""},
		{"b3 deferred, ratio 0", 0, http.Header{"B3": {tid + "-" + sid}}, false, true, ""},
		{"b3 denied, ratio 1", 1, multi(tid, sid, "0", ""), false, true, ""},
		{"b3 sampled, ratio 0", 0, multi(tid, sid, "1", ""), true, true, ""},
		{"b3 state 1 alone, ratio 0", 0, http.Header{"B3": {"1"}}, true, false, ""},
	}
	for _, tt := range tests {
		for _, out := range []bool{false, true} {
			t.Run(tt.name, func(t *testing.T) {
				tr, exp := newTestTracer(t, tt.ratio)
				end := &app{status: 200}
				serve(t, tr, out, tt.h.Clone(), end)
				fwd, ok := ParseTraceparent(end.got.Get("Traceparent"))
				if !ok || len(end.got["Traceparent"]) != 1 {
					t.Fatalf("forwarded traceparent %q is not one valid value", end.got["Traceparent"])
				}
				if fwd.Sampled != tt.sampled {
					t.Fatalf("forwarded sampled %v, want %v", fwd.Sampled, tt.sampled)
				}
				if (fwd.TraceID.String() == tid) != tt.sameTrace {
					t.Fatalf("forwarded trace %s, caller's %s: same %v, want %v", fwd.TraceID, tid, !tt.sameTrace, tt.sameTrace)
				}
				if fwd.SpanID.String() == sid {
					t.Fatal("the caller's span ID forwarded unchanged")
				}
				if got := end.got.Get("Tracestate"); got != tt.state {
					t.Fatalf("forwarded tracestate %q, want %q", got, tt.state)
				}
				checkSpans(t, exp.GetSpans(), fwd, tt.sampled, tt.sameTrace)
			})
		}
	}
}

// checkSpans: a sampled request made one span, the forwarded parent, whose
// parent is the caller's span when there was one.
func checkSpans(t *testing.T, spans tracetest.SpanStubs, fwd Parent, sampled, sameTrace bool) {
	t.Helper()
	if !sampled {
		if len(spans) != 0 {
			t.Fatalf("%d spans exported for an unsampled request", len(spans))
		}
		return
	}
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanContext.TraceID() != fwd.TraceID || s.SpanContext.SpanID() != fwd.SpanID {
		t.Fatalf("span %s/%s is not the forwarded parent %s/%s", s.SpanContext.TraceID(), s.SpanContext.SpanID(), fwd.TraceID, fwd.SpanID)
	}
	if sameTrace && s.Parent.SpanID().String() != sid {
		t.Fatalf("span's parent %s, want the caller's %s", s.Parent.SpanID(), sid)
	}
}

func TestAttributes(t *testing.T) {
	tests := []struct {
		name string
		out  bool
		end  *app
		kind oteltrace.SpanKind
		want map[string]any
	}{
		{"inbound ok", false, &app{status: 200}, oteltrace.SpanKindServer, map[string]any{
			AttrMethod: "GET", AttrPath: "/books/1", AttrServerAddress: "books:8080", AttrStatus: int64(200),
			AttrDirection: "inbound", AttrClientIdentity: remote, AttrServerIdentity: local, AttrTLS: true,
		}},
		{"outbound ok", true, &app{status: 503}, oteltrace.SpanKindClient, map[string]any{
			AttrStatus: int64(503), AttrDirection: "outbound", AttrClientIdentity: local, AttrServerIdentity: remote,
			AttrTLS: true, AttrDstService: "books:8080", AttrRetries: int64(1),
		}},
		{"outbound proxy error", true, &app{err: proxyerr.New(http.StatusServiceUnavailable, metrics.ReasonNoEndpoints, "none")}, oteltrace.SpanKindClient, map[string]any{
			AttrStatus: int64(503), AttrErrorType: string(metrics.ReasonNoEndpoints), AttrDstService: "books:8080",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, exp := newTestTracer(t, 1)
			serve(t, tr, tt.out, http.Header{}, tt.end)
			spans := exp.GetSpans()
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			s := spans[0]
			if s.SpanKind != tt.kind {
				t.Fatalf("kind %v, want %v", s.SpanKind, tt.kind)
			}
			got := map[string]any{}
			for _, a := range s.Attributes {
				got[string(a.Key)] = a.Value.AsInterface()
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			for k, v := range got {
				if s, ok := v.(string); ok && (strings.Contains(s, "secret") || strings.Contains(s, "token")) {
					t.Errorf("%s = %q carries the query string", k, s)
				}
			}
			if tt.end.status >= 500 || tt.end.err != nil {
				if s.Status.Code.String() != "Error" {
					t.Errorf("status %v, want Error", s.Status.Code)
				}
			}
		})
	}
}

// blocked is an exporter that holds every export until released.
type blocked struct {
	release chan struct{}
	once    sync.Once
}

func (b *blocked) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return nil
}
func (b *blocked) Shutdown(context.Context) error { b.once.Do(func() { close(b.release) }); return nil }

// TestQueueFullDrops: a collector that does not answer makes the queue
// drop spans (counted); requests go on unaffected.
func TestQueueFullDrops(t *testing.T) {
	reg := prometheus.NewRegistry()
	exp := &blocked{release: make(chan struct{})}
	tr, err := withExporter(Config{SampleRatio: 1, Identity: local, Collector: "x:1", QueueSize: 4, Registerer: reg}, exp)
	if err != nil {
		t.Fatal(err)
	}
	const n = batchSize + 50
	for range n {
		end := &app{status: 200}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if err := tr.Inbound()(end).Serve(&pipeline.Exchange{W: httptest.NewRecorder(), R: r, Start: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	dropped := spansCounted(t, reg, "dropped")
	if dropped == 0 {
		t.Fatalf("no span dropped of %d with a queue of 4 and a stuck exporter", n)
	}
	t.Logf("%d requests, %v spans dropped", n, dropped)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = exp.Shutdown(ctx)
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func spansCounted(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "trellis_trace_spans_total" && m.GetLabel()[0].GetValue() == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no trellis_trace_spans_total{outcome=%q}", outcome)
	return 0
}
