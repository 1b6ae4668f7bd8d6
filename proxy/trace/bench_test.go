package trace

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// BenchmarkStage: one request through the stage and a trivial rest of
// the chain, with no stage at all ("none"), tracing off, and on (new
// traces unsampled, and sampled; spans go to a stuck exporter's queue and
// are dropped, so only the stage's own cost is measured). "off" is the
// same Handler as "none" (TestOffIsIdentity): its ns/op and allocs/op are
// "none"'s. The proxies' whole round trip is BenchmarkTracingCost in
// proxy/outbound.
func BenchmarkStage(b *testing.B) {
	on := func(ratio float64) pipeline.Layer {
		exp := &blocked{release: make(chan struct{})}
		tr, err := withExporter(Config{SampleRatio: ratio, Identity: local, Collector: "x:1", QueueSize: 1}, exp)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = exp.Shutdown(b.Context()); _ = tr.Shutdown(b.Context()) })
		return tr.Outbound()
	}
	var off *Tracer
	for _, c := range []struct {
		name  string
		layer pipeline.Layer
	}{{"none", nil}, {"off", off.Outbound()}, {"on-unsampled", on(0)}, {"on-sampled", on(1)}} {
		b.Run(c.name, func(b *testing.B) {
			end := pipeline.HandlerFunc(func(x *pipeline.Exchange) error { x.Wrote(200, "", nil); return nil })
			h := pipeline.Handler(end)
			if c.layer != nil {
				h = pipeline.Chain(end, c.layer)
			}
			r := httptest.NewRequest(http.MethodGet, "http://books:8080/books/1", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				r.Header = http.Header{}
				x := &pipeline.Exchange{W: w, R: r, Start: time.Now()}
				if err := h.Serve(x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
