package ratelimit

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// probeLimits is a port whose bucket is empty after one request, with the
// probes route the controller sends for /healthz and /ready.
func probeLimits() *apiv1.Limits {
	return &apiv1.Limits{RequestsPerSecond: 1, Probes: answer.Probes([]string{"/healthz", "/ready"})}
}

// TestProbeExemption: the rule, request by request, on a port whose
// bucket a meshed caller has emptied: only a plaintext GET of exactly a
// probe path of the answer passes (and is counted as exempt); any other
// request is limited as before.
func TestProbeExemption(t *testing.T) {
	for _, tt := range []struct {
		name, peer, method, target string
		lim                        *apiv1.Limits
		exempt                     bool
	}{
		{"plaintext GET of a probe path", "", "GET", "/healthz", probeLimits(), true},
		{"the other probe path", "", "GET", "/ready", probeLimits(), true},
		{"a query is not part of the path", "", "GET", "/ready?full=1", probeLimits(), true},
		{"with mesh TLS: a caller, whatever its path", alice, "GET", "/healthz", probeLimits(), false},
		{"HEAD", "", "HEAD", "/healthz", probeLimits(), false},
		{"POST", "", "POST", "/healthz", probeLimits(), false},
		{"a path under the probe's", "", "GET", "/healthz/x", probeLimits(), false},
		{"a trailing slash", "", "GET", "/healthz/", probeLimits(), false},
		{"another case", "", "GET", "/HEALTHZ", probeLimits(), false},
		{"another path", "", "GET", "/", probeLimits(), false},
		{"dot segments to a probe path: the app may route them elsewhere", "", "GET", "/admin/../healthz", probeLimits(), false},
		{"an escaped slash", "", "GET", "/admin%2F..%2Fhealthz", probeLimits(), false},
		{"a path parameter: every reading of it is the probe path, as authz decides", "", "GET", "/healthz;x=1", probeLimits(), true},
		{"a path parameter before a dot segment", "", "GET", "/admin/..;/healthz", probeLimits(), false},
		{"no probes in the answer", "", "GET", "/healthz", &apiv1.Limits{RequestsPerSecond: 1}, false},
		{"a broken probes route exempts nothing", "", "GET", "/healthz", &apiv1.Limits{RequestsPerSecond: 1,
			Probes: &apiv1.InboundRoute{Name: "probes", Matches: []*apiv1.RouteMatch{{PathRegex: "("}}}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: tt.lim})
			if e := f.call("8080", bob, false); e != nil {
				t.Fatalf("the request that empties the bucket: %v", e)
			}
			e := f.do("8080", tt.peer, httptest.NewRequest(tt.method, tt.target, nil))
			exempted := testutil.ToFloat64(f.m.ExemptCounter("server/api", metrics.ExemptProbe))
			switch {
			case tt.exempt && (e != nil || exempted != 1):
				t.Fatalf("refused (%v) or not counted (%v exempt): want exempt", e, exempted)
			case !tt.exempt && (e == nil || e.Status != 429 || exempted != 0):
				t.Fatalf("%+v, %v exempt: want 429 and none exempt", e, exempted)
			}
		})
	}
}

// TestProbeTakesNoToken: exempt probes leave the bucket and the per-client
// bucket of the callers without mesh TLS alone.
func TestProbeTakesNoToken(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 100, Burst: 2,
		ClientRequestsPerSecond: 1, Probes: answer.Probes([]string{"/healthz"})}})
	for i := range 3 {
		if e := f.do("8080", "", httptest.NewRequest("GET", "/healthz", nil)); e != nil {
			t.Fatalf("probe %d: %v", i, e)
		}
	}
	if e := f.call("8080", "", false); e != nil {
		t.Fatalf("a plaintext caller after the probes: %v (the probes took its token)", e)
	}
	if e := f.call("8080", alice, false); e != nil {
		t.Fatalf("a meshed caller after the probes: %v (the probes took the server's token)", e)
	}
}

// TestProbeAllowance: a plaintext caller flooding a probe path gets the
// allowance (3 a second per path, burst 6) and is limited past it, so the
// probe path is no way around the limit; the allowance refills.
func TestProbeAllowance(t *testing.T) {
	f := newFixture(t)
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 1, Burst: 1,
		Probes: answer.Probes([]string{"/healthz"})}})
	probe := func() error {
		if e := f.do("8080", "", httptest.NewRequest("GET", "/healthz", nil)); e != nil {
			return e
		}
		return nil
	}
	passed := 0
	for range 20 {
		if probe() == nil {
			passed++
		}
	}
	exempted := testutil.ToFloat64(f.m.ExemptCounter("server/api", metrics.ExemptProbe))
	// 6 of the allowance, then 1 of the port's own bucket.
	if passed != 7 || exempted != 6 {
		t.Fatalf("%d of 20 passed, %v exempt: want the allowance (6) and the bucket's one token", passed, exempted)
	}
	f.clk.add(time.Second)
	if err := probe(); err != nil {
		t.Fatalf("a second later: %v", err)
	}
	// An answer with the same probes keeps the allowance's state; other
	// probes start afresh.
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 1, Burst: 1,
		Probes: answer.Probes([]string{"/healthz"})}, Authorizations: []*apiv1.Authorization{{Name: "new"}}})
	// Left: 2 of the allowance and the port's token of that second.
	for range 3 {
		_ = probe()
	}
	if err := probe(); err == nil {
		t.Fatal("an answer with the same probes refilled the allowance")
	}
	f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: &apiv1.Limits{RequestsPerSecond: 1, Burst: 1,
		Probes: answer.Probes([]string{"/healthz", "/ready"})}})
	if err := probe(); err != nil {
		t.Fatalf("new probes: %v", err)
	}
}

// TestProbeConcurrency: with the concurrency limit (hard, or adaptive)
// reached, a probe still reaches the app, and is not in flight as far as
// the limit is concerned; a meshed caller on the probe path is refused.
func TestProbeConcurrency(t *testing.T) {
	for _, lim := range []*apiv1.Limits{
		{MaxConcurrency: 1},
		{MaxConcurrency: 1, AdaptiveConcurrency: &apiv1.AdaptiveConcurrency{}},
	} {
		f := newFixture(t)
		lim.Probes = answer.Probes([]string{"/healthz"})
		f.src.set(8080, &apiv1.ServerPolicy{Name: "server/api", Limits: lim})
		wg := f.holdInFlight(t, 1)
		_, inFlightG := f.m.Concurrency("server/api")
		// The probe, while the limit is reached: its app records what is
		// in flight then.
		var atApp float64 = -1
		x := &pipeline.Exchange{R: httptest.NewRequest("GET", "/healthz", nil), AppAddr: "127.0.0.1:8080"}
		err := f.l.Layer(pipeline.HandlerFunc(func(*pipeline.Exchange) error {
			atApp = testutil.ToFloat64(inFlightG)
			return nil
		})).Serve(x)
		if err != nil || atApp != 1 {
			t.Errorf("%v: probe at the limit: %v, in flight at the app %v: want admitted, not counted in flight", lim, err, atApp)
		}
		if e := f.do("8080", bob, httptest.NewRequest("GET", "/healthz", nil)); e == nil || e.Status != 503 {
			t.Errorf("%v: a meshed caller on the probe path: %+v, want 503", lim, e)
		}
		close(f.block)
		wg.Wait()
	}
}
