package retry

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func TestDecide(t *testing.T) {
	explicit := &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, RetryOnGrpc: []uint32{14}}
	grpcOnly := &apiv1.RetryPolicy{RetryOnGrpc: []uint32{14, 8}}
	tests := []struct {
		name       string
		p          *apiv1.RetryPolicy
		method     string
		status     int
		grpc       string
		wantReason string
		wantSkip   string
	}{
		{name: "no policy", p: nil, method: "GET", status: 503},
		{name: "listed status, GET", p: explicit, method: "GET", status: 503, wantReason: ReasonStatus},
		{name: "listed status, POST: the user's decision", p: explicit, method: "POST", status: 503, wantReason: ReasonStatus},
		{name: "unlisted 5xx with a list", p: explicit, method: "GET", status: 500},
		{name: "success", p: explicit, method: "GET", status: 200},
		{name: "empty list: 5xx of GET", p: &apiv1.RetryPolicy{}, method: "GET", status: 502, wantReason: ReasonStatus},
		{name: "empty list: 5xx of PUT", p: &apiv1.RetryPolicy{}, method: "PUT", status: 500, wantReason: ReasonStatus},
		{name: "empty list: 5xx of POST is not idempotent", p: &apiv1.RetryPolicy{}, method: "POST", status: 503, wantSkip: SkipMethod},
		{name: "empty list: 5xx of PATCH is not idempotent", p: &apiv1.RetryPolicy{}, method: "PATCH", status: 500, wantSkip: SkipMethod},
		{name: "empty list: 4xx", p: &apiv1.RetryPolicy{}, method: "GET", status: 429},
		{name: "empty list: 600 is not 5xx", p: &apiv1.RetryPolicy{}, method: "GET", status: 600},
		{name: "grpc UNAVAILABLE listed, POST", p: explicit, method: "POST", status: 200, grpc: "14", wantReason: ReasonGRPC},
		{name: "grpc RESOURCE_EXHAUSTED listed", p: grpcOnly, method: "POST", status: 200, grpc: "8", wantReason: ReasonGRPC},
		{name: "grpc INTERNAL not listed", p: explicit, method: "POST", status: 200, grpc: "13"},
		{name: "grpc OK", p: grpcOnly, method: "POST", status: 200, grpc: "0"},
		{name: "grpc status garbage", p: grpcOnly, method: "POST", status: 200, grpc: "14x"},
		{name: "grpc status overflow", p: grpcOnly, method: "POST", status: 200, grpc: "4294967310"},
		{name: "grpc-only policy, a 503 of a gRPC POST: 5xx default, not idempotent", p: grpcOnly, method: "POST", status: 503, wantSkip: SkipMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := Decide(tt.p, tt.method, tt.status, tt.grpc)
			if r != tt.wantReason || s != tt.wantSkip {
				t.Errorf("Decide = %q, %q; want %q, %q", r, s, tt.wantReason, tt.wantSkip)
			}
		})
	}
}

func TestDecideTimeout(t *testing.T) {
	tests := []struct {
		name       string
		p          *apiv1.RetryPolicy
		method     string
		grpc       bool
		wantReason string
		wantSkip   string
	}{
		{name: "default list, GET", p: &apiv1.RetryPolicy{}, method: "GET", wantReason: ReasonTimeout},
		{name: "default list, POST", p: &apiv1.RetryPolicy{}, method: "POST", wantSkip: SkipMethod},
		{name: "504 listed, POST", p: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503, 504}}, method: "POST", wantReason: ReasonTimeout},
		{name: "only 503 listed, GET: a timeout of an idempotent request is retried", p: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}}, method: "GET", wantReason: ReasonTimeout},
		{name: "only 503 listed, POST", p: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}}, method: "POST", wantSkip: SkipMethod},
		{name: "no policy", p: nil, method: "GET"},
		{name: "gRPC DEADLINE_EXCEEDED listed", p: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, RetryOnGrpc: []uint32{4}}, method: "POST", grpc: true, wantReason: ReasonTimeout},
		{name: "gRPC, only UNAVAILABLE listed", p: &apiv1.RetryPolicy{RetryOnStatus: []uint32{503}, RetryOnGrpc: []uint32{14}}, method: "POST", grpc: true, wantSkip: SkipMethod},
		{name: "DEADLINE_EXCEEDED listed but not gRPC", p: &apiv1.RetryPolicy{RetryOnGrpc: []uint32{4}}, method: "POST", wantSkip: SkipMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, s := DecideTimeout(tt.p, tt.method, tt.grpc)
			if r != tt.wantReason || s != tt.wantSkip {
				t.Errorf("DecideTimeout = %q, %q; want %q, %q", r, s, tt.wantReason, tt.wantSkip)
			}
		})
	}
}

func TestMaxRetries(t *testing.T) {
	for _, tt := range []struct{ in, want int }{{0, DefaultMaxRetries}, {1, 1}, {3, 3}, {1000, MaxMaxRetries}} {
		if got := MaxRetries(&apiv1.RetryPolicy{MaxRetries: uint32(tt.in)}); got != tt.want {
			t.Errorf("MaxRetries(%d) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	ms := func(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name   string
		p      *apiv1.RetryPolicy
		n      int
		lo, hi time.Duration
	}{
		{name: "defaults, first retry", p: &apiv1.RetryPolicy{}, n: 0, lo: 25 * time.Millisecond, hi: 50 * time.Millisecond},
		{name: "defaults, second retry", p: &apiv1.RetryPolicy{}, n: 1, lo: 25 * time.Millisecond, hi: 100 * time.Millisecond},
		{name: "defaults, capped", p: &apiv1.RetryPolicy{}, n: 8, lo: 25 * time.Millisecond, hi: 250 * time.Millisecond},
		{name: "huge n does not overflow", p: &apiv1.RetryPolicy{}, n: 200, lo: 25 * time.Millisecond, hi: 250 * time.Millisecond},
		{name: "set", p: &apiv1.RetryPolicy{BackoffBase: ms(100), BackoffMax: ms(1000)}, n: 2, lo: 100 * time.Millisecond, hi: 800 * time.Millisecond},
		{name: "max under base: base", p: &apiv1.RetryPolicy{BackoffBase: ms(100), BackoffMax: ms(10)}, n: 3, lo: 100 * time.Millisecond, hi: 100 * time.Millisecond},
		{name: "negative base: default", p: &apiv1.RetryPolicy{BackoffBase: ms(-5)}, n: 0, lo: 25 * time.Millisecond, hi: 50 * time.Millisecond},
		{name: "nil policy: defaults", p: nil, n: 0, lo: 25 * time.Millisecond, hi: 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[time.Duration]bool{}
			for _, r := range []uint64{0, 1, 12345, 1 << 40, ^uint64(0), 987654321987} {
				d := Backoff(tt.p, tt.n, r)
				if d < tt.lo || d > tt.hi {
					t.Fatalf("Backoff(n=%d, r=%d) = %v, want within [%v, %v]", tt.n, r, d, tt.lo, tt.hi)
				}
				seen[d] = true
			}
			if tt.lo != tt.hi && len(seen) < 2 {
				t.Errorf("no jitter: %v", seen)
			}
		})
	}
}

func TestPerTry(t *testing.T) {
	s := func(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Second) }
	tests := []struct {
		name  string
		route *apiv1.Route
		want  time.Duration
	}{
		{name: "nil route", route: nil, want: 0},
		{name: "neither", route: &apiv1.Route{Retry: &apiv1.RetryPolicy{}}, want: 0},
		{name: "per try only", route: &apiv1.Route{Retry: &apiv1.RetryPolicy{PerTryTimeout: s(2)}}, want: 2 * time.Second},
		{name: "backend only", route: &apiv1.Route{BackendTimeout: s(3)}, want: 3 * time.Second},
		{name: "the smaller: per try", route: &apiv1.Route{BackendTimeout: s(3), Retry: &apiv1.RetryPolicy{PerTryTimeout: s(2)}}, want: 2 * time.Second},
		{name: "the smaller: backend", route: &apiv1.Route{BackendTimeout: s(1), Retry: &apiv1.RetryPolicy{PerTryTimeout: s(2)}}, want: time.Second},
		{name: "negative ignored", route: &apiv1.Route{BackendTimeout: s(-1), Retry: &apiv1.RetryPolicy{PerTryTimeout: s(2)}}, want: 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PerTry(tt.route); got != tt.want {
				t.Errorf("PerTry = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIdempotent(t *testing.T) {
	for m, want := range map[string]bool{"GET": true, "HEAD": true, "PUT": true, "DELETE": true, "OPTIONS": true, "TRACE": true, "POST": false, "PATCH": false, "CONNECT": false, "get": false, "": false} {
		if Idempotent(m) != want {
			t.Errorf("Idempotent(%q) != %v", m, want)
		}
	}
}
