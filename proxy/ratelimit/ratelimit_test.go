package ratelimit

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// source is a Source of pure logic: one answer per port, set by the test.
type source struct {
	mu  sync.Mutex
	pol map[uint16]*apiv1.ServerPolicy
}

func (s *source) Get(_ context.Context, port uint16) inboundpolicy.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.pol[port]; ok {
		return inboundpolicy.Snapshot{Port: port, Policy: p, FromController: true}
	}
	return inboundpolicy.Snapshot{Port: port, Policy: &apiv1.ServerPolicy{Name: "default"}}
}

func (s *source) set(port uint16, p *apiv1.ServerPolicy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pol[port] = p
}

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	src   *source
	clk   *clock
	reg   *prometheus.Registry
	l     *Limiter
	m     *metrics.RateLimit
	block chan struct{} // when set, the app waits on it
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{src: &source{pol: map[uint16]*apiv1.ServerPolicy{}}, clk: &clock{t: t0}, reg: prometheus.NewRegistry()}
	var err error
	if f.m, err = metrics.NewRateLimit(f.reg); err != nil {
		t.Fatal(err)
	}
	if f.l, err = New(Config{Source: f.src, Metrics: f.m, Now: f.clk.now, MaxClients: 4}); err != nil {
		t.Fatal(err)
	}
	return f
}

// call sends one request to port from peer ("" without mesh TLS) and
// returns the error the stage answered with (nil: the app got it).
func (f *fixture) call(port string, peer string, grpc bool) *proxyerr.Error {
	r := httptest.NewRequest(http.MethodPost, "/x", nil)
	if grpc {
		r.ProtoMajor, r.ProtoMinor = 2, 0
		r.Header.Set("Content-Type", "application/grpc")
	}
	return f.do(port, peer, r)
}

// do sends r to port from peer ("" without mesh TLS) and returns the
// error the stage answered with (nil: the app got it).
func (f *fixture) do(port, peer string, r *http.Request) *proxyerr.Error {
	x := &pipeline.Exchange{R: r, AppAddr: "127.0.0.1:" + port, Conn: pipeline.Conn{Peer: peer, TLS: peer != ""}}
	err := f.l.Layer(pipeline.HandlerFunc(func(*pipeline.Exchange) error {
		if f.block != nil {
			<-f.block
		}
		return nil
	})).Serve(x)
	var e *proxyerr.Error
	if err != nil && !errors.As(err, &e) {
		panic(err)
	}
	return e
}

const (
	alice = "spiffe://cluster.local/ns/a/sa/alice"
	bob   = "spiffe://cluster.local/ns/a/sa/bob"
	batch = "spiffe://cluster.local/ns/a/sa/batch"
)

// TestRateLimits: the server's bucket, each client's, an override's own;
// the callers without mesh TLS share one; a refusal is 429 with
// Retry-After (RESOURCE_EXHAUSTED for gRPC) and counted by bucket, never
// by an unbounded identity.
func TestRateLimits(t *testing.T) {
	type call struct {
		peer       string
		want       int    // 0: admitted
		wantClient string // the refused bucket's label
	}
	for _, tt := range []struct {
		name  string
		lim   *apiv1.Limits
		calls []call
	}{
		{"server bucket", &apiv1.Limits{RequestsPerSecond: 2}, []call{{alice, 0, ""}, {bob, 0, ""}, {"", 429, ""}}},
		{"per client: one noisy caller cannot use the server's budget", &apiv1.Limits{RequestsPerSecond: 10, ClientRequestsPerSecond: 2},
			[]call{{alice, 0, ""}, {alice, 0, ""}, {alice, 429, "per_client"}, {bob, 0, ""}, {"", 0, ""}, {"", 0, ""}, {"", 429, "per_client"}}},
		{"override: its own bucket instead of perClient", &apiv1.Limits{ClientRequestsPerSecond: 1,
			Overrides: []*apiv1.ClientLimit{{Identities: []string{batch}, RequestsPerSecond: 3}}},
			[]call{{batch, 0, ""}, {batch, 0, ""}, {batch, 0, ""}, {batch, 429, batch}, {alice, 0, ""}, {alice, 429, "per_client"}}},
		{"override and server: both must have a token", &apiv1.Limits{RequestsPerSecond: 1,
			Overrides: []*apiv1.ClientLimit{{Identities: []string{batch}, RequestsPerSecond: 5}}},
			[]call{{batch, 0, ""}, {batch, 429, ""}}},
		{"a client refused takes no token of the server's", &apiv1.Limits{RequestsPerSecond: 2, ClientRequestsPerSecond: 1},
			[]call{{alice, 0, ""}, {alice, 429, "per_client"}, {alice, 429, "per_client"}, {bob, 0, ""}, {"", 429, ""}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: tt.lim})
			for i, c := range tt.calls {
				e := f.call("8080", c.peer, false)
				switch {
				case c.want == 0 && e != nil:
					t.Fatalf("call %d from %q refused: %v", i, c.peer, e)
				case c.want != 0 && (e == nil || e.Status != c.want || e.Reason != proxyerr.ReasonRateLimited || e.RetryAfter <= 0):
					t.Fatalf("call %d from %q: %+v, want %d rate_limited with a Retry-After", i, c.peer, e, c.want)
				case c.want != 0:
					if n := testutil.ToFloat64(f.m.RefusedCounter(metrics.Inbound, "server/api", metrics.LimitRate, c.wantClient)); n < 1 {
						t.Fatalf("call %d: not counted with client=%q", i, c.wantClient)
					}
				}
			}
			// A second later the buckets have a token again.
			f.clk.add(time.Second)
			if e := f.call("8080", tt.calls[0].peer, true); e != nil {
				t.Fatalf("a second later: %v", e)
			}
		})
	}
}

// TestRateLimitGRPCAndOtherPorts: a gRPC call is refused with the gRPC
// mark (the renderer makes it RESOURCE_EXHAUSTED); a port without limits
// and the default policy are not limited at all.
func TestRateLimitGRPCAndOtherPorts(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 1}})
	f.src.set(9090, &apiv1.ServerPolicy{Name: "server/open"})
	if e := f.call("8080", "", true); e != nil {
		t.Fatal(e)
	}
	if e := f.call("8080", "", true); e == nil || !e.GRPC || e.Status != 429 {
		t.Fatalf("gRPC over the limit: %+v", e)
	}
	for i := range 50 {
		if e := f.call("9090", "", false); e != nil {
			t.Fatalf("call %d to a port without limits: %v", i, e)
		}
		if e := f.call("7070", "", false); e != nil {
			t.Fatalf("call %d to a port with the default policy: %v", i, e)
		}
	}
	// Ports without limits keep nothing: a caller naming many ports
	// grows no map.
	for port := range 2000 {
		f.call(strconv.Itoa(10000+port), "", false)
	}
	n := 0
	f.l.ports.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("%d ports kept, want the one with limits", n)
	}
}

// TestRateLimitAnswerChanges: an answer with the same limits (an
// authorization changed) keeps the buckets' state; new limits start
// afresh; limits removed lift them.
func TestRateLimitAnswerChanges(t *testing.T) {
	f := newFixture(t)
	lim := &apiv1.Limits{RequestsPerSecond: 1}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: lim})
	if e := f.call("8080", "", false); e != nil {
		t.Fatal(e)
	}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 1},
		Authorizations: []*apiv1.Authorization{{Name: "new", Unauthenticated: true}}})
	if e := f.call("8080", "", false); e == nil {
		t.Fatal("an answer with the same limits refilled the bucket")
	}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 2}})
	if e := f.call("8080", "", false); e != nil {
		t.Fatalf("new limits: %v", e)
	}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api"})
	for range 10 {
		if e := f.call("8080", "", false); e != nil {
			t.Fatalf("limits removed: %v", e)
		}
	}
	if _, kept := f.l.ports.Load(uint16(8080)); kept {
		t.Fatal("a port whose limits were removed is still kept")
	}
}

// TestConcurrencyGaugesForgotten: a Server's concurrency gauges go when
// its concurrency limit does.
func TestConcurrencyGaugesForgotten(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{MaxConcurrency: 3}})
	f.call("8080", "", false)
	if n := testutil.CollectAndCount(f.reg, "trellis_concurrency_limit"); n != 1 {
		t.Fatalf("%d limit series, want 1", n)
	}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 5}})
	f.call("8080", "", false)
	if n := testutil.CollectAndCount(f.reg, "trellis_concurrency_limit"); n != 0 {
		t.Fatalf("%d limit series after the concurrency limit went, want 0", n)
	}
}

// TestConcurrencyLimit: past max_concurrency a request is refused at
// once with 503 overloaded (no queue), counted; the gauges show the limit
// and the requests in flight; a request ending frees its place.
func TestConcurrencyLimit(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{MaxConcurrency: 2}})
	wg := f.holdInFlight(t, 2)
	limitG, inFlightG := f.m.Concurrency("server/api")
	e := f.call("8080", bob, true)
	if e == nil || e.Status != 503 || e.Reason != proxyerr.ReasonOverloaded || !e.GRPC {
		t.Fatalf("third request: %+v, want 503 overloaded for gRPC", e)
	}
	if n := testutil.ToFloat64(f.m.RefusedCounter(metrics.Inbound, "server/api", metrics.LimitConcurrency, "")); n != 1 || testutil.ToFloat64(limitG) != 2 {
		t.Fatalf("refused %v, limit gauge %v", n, testutil.ToFloat64(limitG))
	}
	close(f.block)
	wg.Wait()
	f.block = nil
	if testutil.ToFloat64(inFlightG) != 0 {
		t.Fatal("in flight not back to 0")
	}
	if e := f.call("8080", bob, false); e != nil {
		t.Fatalf("after the others ended: %v", e)
	}
}

// TestAdaptiveConcurrency: with adaptive on, the limit starts within its
// bounds, capped by max_concurrency, and the gauge follows it.
func TestAdaptiveConcurrency(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{MaxConcurrency: 50,
		AdaptiveConcurrency: &apiv1.AdaptiveConcurrency{MinLimit: 5}}})
	if e := f.call("8080", "", false); e != nil {
		t.Fatal(e)
	}
	limitG, _ := f.m.Concurrency("server/api")
	if got := testutil.ToFloat64(limitG); got != 50 {
		t.Fatalf("adaptive limit %v, want the initial 100 capped by max_concurrency 50", got)
	}
}

// holdInFlight sends n requests from alice to port 8080 whose app waits
// on f.block (set here), and returns once they are in flight.
func (f *fixture) holdInFlight(t *testing.T, n int) *sync.WaitGroup {
	t.Helper()
	f.block = make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if e := f.call("8080", alice, false); e != nil {
				t.Errorf("within the limit: %v", e)
			}
		})
	}
	_, inFlightG := f.m.Concurrency("server/api")
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(inFlightG) != float64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("the %d requests never were in flight", n)
		}
		time.Sleep(time.Millisecond)
	}
	return &wg
}
