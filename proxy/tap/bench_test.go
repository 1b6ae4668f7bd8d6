package tap

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// BenchmarkLayer is the tap stage's own cost per request: direct (no
// stage), the stage with no tap open (one atomic load), with a tap open
// that cannot match (path), and with a tap of everything whose queue a
// reader drains. go test -run '^$' -bench Layer ./proxy/tap/
func BenchmarkLayer(b *testing.B) {
	end := pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		x.W.WriteHeader(http.StatusOK)
		return nil
	})
	r := httptest.NewRequest(http.MethodGet, "http://books.demo:80/books/1", nil)
	w := httptest.NewRecorder()
	cases := []struct {
		name string
		req  *apiv1.ObserveRequest
	}{
		{"no-tap", nil},
		{"tap-other-path", &apiv1.ObserveRequest{Match: &apiv1.TapMatch{PathPrefix: "/other"}}},
		{"tap-all", &apiv1.ObserveRequest{MaxRps: MaxMaxRPS, HeaderNames: true}},
	}
	// A stage that only calls the next one: what any Layer costs.
	b.Run("pass-through-stage", func(b *testing.B) {
		stage := func(next pipeline.Handler) pipeline.Handler {
			return pipeline.HandlerFunc(func(x *pipeline.Exchange) error { return next.Serve(x) })
		}(end)
		x := &pipeline.Exchange{W: w, R: r}
		for b.Loop() {
			_ = stage.Serve(x)
		}
	})
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h, _, _ := testHub(b)
			h.now = time.Now
			if c.req != nil {
				s, err := h.Subscribe(c.req, 0)
				if err != nil {
					b.Fatal(err)
				}
				defer h.Unsubscribe(s)
				done := make(chan struct{})
				defer close(done)
				go func() {
					for {
						select {
						case <-s.Events():
						case <-done:
							return
						}
					}
				}()
			}
			stage := h.Layer(metrics.Outbound)(end)
			x := &pipeline.Exchange{W: w, R: r}
			for b.Loop() {
				_ = stage.Serve(x)
			}
		})
	}
}
