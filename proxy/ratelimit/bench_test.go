package ratelimit

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// BenchmarkLayer: the stage's cost per admitted request, for a port
// without limits and with every kind (server and client buckets, the
// adaptive concurrency limit). Compare: go test -bench Layer -benchmem.
func BenchmarkLayer(b *testing.B) {
	for _, bc := range []struct {
		name string
		lim  *apiv1.Limits
	}{
		{"none", nil},
		{"rate+client+adaptive", &apiv1.Limits{RequestsPerSecond: 1e6, Burst: 1e6, ClientRequestsPerSecond: 1e6, ClientBurst: 1e6,
			MaxConcurrency: 1000, AdaptiveConcurrency: &apiv1.AdaptiveConcurrency{}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			src := &source{pol: map[uint16]*apiv1.ServerPolicy{8080: {Name: "server/api", Limits: bc.lim}}}
			l, err := New(Config{Source: src, Now: time.Now})
			if err != nil {
				b.Fatal(err)
			}
			h := l.Layer(pipeline.HandlerFunc(func(*pipeline.Exchange) error { return nil }))
			x := &pipeline.Exchange{R: httptest.NewRequest(http.MethodGet, "/", nil), AppAddr: "127.0.0.1:8080",
				Conn: pipeline.Conn{Peer: alice, TLS: true}}
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Serve(x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
