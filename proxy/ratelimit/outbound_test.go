package ratelimit

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// admit asks o to admit one request to dst (a gRPC call when grpc) under
// lim, and returns the refusal (nil: admitted).
func admit(t *testing.T, o *Outbound, dst string, lim *apiv1.OutboundLimit, grpc bool) *proxyerr.Error {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://"+dst+"/x", nil)
	if grpc {
		r.ProtoMajor, r.ProtoMinor = 2, 0
		r.Header.Set("Content-Type", "application/grpc")
	}
	err := o.Admit(&pipeline.Exchange{R: r, Dest: pipeline.Dest{Dst: dst}}, lim)
	var e *proxyerr.Error
	if err != nil && !errors.As(err, &e) {
		t.Fatalf("not a proxy error: %v", err)
	}
	return e
}

// TestOutboundAdmit: one bucket per RateLimit, shared by every port and
// name of the Service; a refusal is the proxy's own 429 with Retry-After
// (RESOURCE_EXHAUSTED for gRPC), counted with direction=outbound; a new
// setting keeps the tokens left (at most its burst), so two ports seeing
// a change at different moments cannot refill it.
func TestOutboundAdmit(t *testing.T) {
	lim := &apiv1.OutboundLimit{Name: "shop/books-limit", RequestsPerSecond: 2, Burst: 3}
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"burst then refused, shared across ports and names", []step{
			{"books.shop:8080", lim, 0}, {"books.shop.svc.cluster.local:8080", lim, 0}, {"books.shop:9090", lim, 0},
			{"books.shop:8080", lim, 500 * time.Millisecond},
		}},
		{"a token back after 1/rate", []step{
			{"a:80", lim, 0}, {"a:80", lim, 0}, {"a:80", lim, 0}, {"a:80", lim, 500 * time.Millisecond},
			{"advance", nil, 500 * time.Millisecond}, {"a:80", lim, 0}, {"a:80", lim, 500 * time.Millisecond},
		}},
		{"no limit, or no rate: admitted", []step{
			{"a:80", nil, 0}, {"a:80", &apiv1.OutboundLimit{Name: "x"}, 0},
		}},
		{"new settings keep the tokens left", []step{
			{"a:80", lim, 0}, {"a:80", lim, 0}, {"a:80", lim, 0},
			{"a:80", &apiv1.OutboundLimit{Name: "shop/books-limit", RequestsPerSecond: 4, Burst: 10}, 250 * time.Millisecond},
			{"a:80", lim, 500 * time.Millisecond},
		}},
		{"other RateLimits have their own buckets", []step{
			{"a:80", &apiv1.OutboundLimit{Name: "shop/a", RequestsPerSecond: 1}, 0},
			{"b:80", &apiv1.OutboundLimit{Name: "shop/b", RequestsPerSecond: 1}, 0},
			{"a:80", &apiv1.OutboundLimit{Name: "shop/a", RequestsPerSecond: 1}, time.Second},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: t0}
			m, err := metrics.NewRateLimit(prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			o := NewOutbound(m, clk.now)
			refusals := map[string]float64{}
			for i, s := range tt.steps {
				if s.dst == "advance" {
					clk.add(s.wait)
					continue
				}
				grpc := i%2 == 1
				e := admit(t, o, s.dst, s.lim, grpc)
				if s.wait == 0 {
					if e != nil {
						t.Fatalf("step %d (%s): refused: %v", i, s.dst, e)
					}
					continue
				}
				refusals[s.lim.GetName()]++
				if e == nil || e.Status != http.StatusTooManyRequests || e.Reason != proxyerr.ReasonRateLimited || e.RetryAfter != s.wait || e.GRPC != grpc {
					t.Fatalf("step %d (%s): %+v, want 429 rate_limited, Retry-After %v, gRPC %v", i, s.dst, e, s.wait, grpc)
				}
			}
			for name, n := range refusals {
				if got := testutil.ToFloat64(m.RefusedCounter(metrics.Outbound, name, metrics.LimitRate, "")); got != n {
					t.Errorf("%s: %v refusals counted, want %v", name, got, n)
				}
			}
		})
	}
}

// step is one request to dst under lim, refused with Retry-After wait
// (0: admitted); dst "advance" moves the clock by wait instead.
type step struct {
	dst  string
	lim  *apiv1.OutboundLimit
	wait time.Duration
}
