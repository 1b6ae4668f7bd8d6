package ratelimit

import (
	"net/http"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/proxy/policy"
)

// probeRatePerPath is the allowance of exempt probe requests a second per
// probe path: a container has at most three probes (liveness, readiness,
// startup), each at most once a second (periodSeconds >= 1). The burst is
// twice the rate, for probes that fall due together.
const probeRatePerPath = 3

// probes is a port's exemption of the kubelet's HTTP probes
// (Limits.probes): a request without mesh TLS that the probes route
// matches and allows, decided by internal/authz as on a port without a
// Server (the same route, the same evaluator, every reading of the path),
// is neither limited nor counted, up to an allowance of its own. Past the
// allowance, such requests meet the limits as any other: a caller that
// floods a probe path gains at most the allowance.
type probes struct {
	route *apiv1.InboundRoute // what it was built from
	pol   *authz.Policy       // the route alone; any other request: denied
	mu    sync.Mutex
	allow Bucket
}

// newProbes compiles the probes route of an answer's limits; nil when it
// has none or is broken (no exemption: the limits apply to every request).
func newProbes(r *apiv1.InboundRoute, now time.Time) *probes {
	if len(r.GetMatches()) == 0 {
		return nil
	}
	pol, err := authz.Compile(&apiv1.ServerPolicy{Name: "probes", Access: apiv1.AccessPolicy_DENY, Routes: []*apiv1.InboundRoute{r}}, authz.Defaults{})
	if err != nil {
		return nil
	}
	rate := uint32(probeRatePerPath * len(r.GetMatches()))
	return &probes{route: r, pol: pol, allow: NewBucket(rate, 2*rate, now)}
}

// sameProbes reports whether two answers' probe routes are the same.
func sameProbes(a, b *apiv1.InboundRoute) bool { return proto.Equal(a, b) }

// exempt reports whether a request is a probe within the allowance, and
// if so takes its token. tls: the caller has mesh TLS (a mesh identity).
func (p *probes) exempt(tls bool, r *http.Request, now time.Time) bool {
	if p == nil || tls || r == nil {
		return false
	}
	if !p.pol.Decide(policy.Input(policy.Caller{}, r)).Allowed {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.allow.Wait(now) > 0 {
		return false
	}
	p.allow.Take()
	return true
}
