package retry

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// FuzzDecide: whatever a peer sends as status and grpc-status, Decide
// never panics, retries only what the policy lists (or a 5xx of an
// idempotent method with no list), and Backoff stays within its bounds.
func FuzzDecide(f *testing.F) {
	f.Add("GET", 503, "", uint32(503), uint32(14), int64(25), int64(250), 0, uint64(7))
	f.Add("POST", 200, "14", uint32(0), uint32(14), int64(-1), int64(0), 3, uint64(1<<63))
	f.Add("PATCH", 599, "99999999999999999999", uint32(0), uint32(0), int64(1e12), int64(1), 64, uint64(0))
	f.Fuzz(func(t *testing.T, method string, status int, grpc string, listS, listG uint32, base, ceil int64, n int, r uint64) {
		p := &apiv1.RetryPolicy{BackoffBase: durationpb.New(time.Duration(base) * time.Millisecond), BackoffMax: durationpb.New(time.Duration(ceil) * time.Millisecond)}
		if listS != 0 {
			p.RetryOnStatus = []uint32{listS}
		}
		if listG != 0 {
			p.RetryOnGrpc = []uint32{listG}
		}
		reason, skip := Decide(p, method, status, grpc)
		switch reason {
		case ReasonStatus:
			if listS != 0 && uint32(status) != listS || listS == 0 && (!Idempotent(method) || status < 500 || status > 599) {
				t.Errorf("status %d of %s retried under %v", status, method, p)
			}
		case ReasonGRPC:
			if listG == 0 {
				t.Errorf("grpc-status %q retried with no list", grpc)
			}
		case "":
		default:
			t.Errorf("reason %q", reason)
		}
		if reason != "" && skip != "" {
			t.Errorf("both %q and %q", reason, skip)
		}
		if n < 0 {
			n = -n
		}
		d := Backoff(p, n%1000, r)
		lo := p.GetBackoffBase().AsDuration()
		if lo <= 0 {
			lo = DefaultBackoffBase
		}
		hi := max(p.GetBackoffMax().AsDuration(), lo)
		if p.GetBackoffMax().AsDuration() <= 0 {
			hi = max(DefaultBackoffMax, lo)
		}
		if d < lo || d > hi {
			t.Errorf("Backoff = %v, want within [%v, %v]", d, lo, hi)
		}
	})
}
