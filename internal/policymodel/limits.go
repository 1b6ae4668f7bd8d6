package policymodel

import (
	"errors"
	"fmt"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Limits translates a RateLimit into the limits sent to its Server's
// proxies. It refuses what the proxy would refuse (an override identity
// internal/identity cannot parse), naming every bad entry, as
// Authorization does: the RateLimit is then not used (AcceptRateLimit
// says Invalid) rather than half applied.
func Limits(rl *policyv1.RateLimit, trustDomain string) (*apiv1.Limits, error) {
	s := rl.Spec
	l := &apiv1.Limits{
		RequestsPerSecond: nonNegative(s.RequestsPerSecond),
		MaxConcurrency:    nonNegative(s.Concurrency),
		Burst:             nonNegative(s.Burst),
	}
	if pc := s.PerClient; pc != nil {
		l.ClientRequestsPerSecond = uint32(max(0, pc.RequestsPerSecond))
		l.ClientBurst = nonNegative(pc.Burst)
	}
	var errs []error
	for i, o := range s.Overrides {
		cl := &apiv1.ClientLimit{RequestsPerSecond: uint32(max(0, o.RequestsPerSecond)), Burst: nonNegative(o.Burst)}
		for j, id := range o.Clients.Identities {
			if _, err := identity.Parse(string(id)); err != nil {
				errs = append(errs, fmt.Errorf("overrides[%d].clients.identities[%d]: %w", i, j, err))
				continue
			}
			cl.Identities = appendNew(cl.Identities, string(id))
		}
		for j, sa := range o.Clients.ServiceAccounts {
			id := identity.ID{TrustDomain: trustDomain, Namespace: cmpOr(sa.Namespace, rl.Namespace), ServiceAccount: sa.Name}
			if err := id.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("overrides[%d].clients.serviceAccounts[%d] %s/%s: %w", i, j, id.Namespace, sa.Name, err))
				continue
			}
			cl.Identities = appendNew(cl.Identities, id.String())
		}
		l.Overrides = append(l.Overrides, cl)
	}
	if a := s.AdaptiveConcurrency; a != nil && a.Enabled {
		l.AdaptiveConcurrency = &apiv1.AdaptiveConcurrency{MinLimit: nonNegative(a.MinLimit), MaxLimit: nonNegative(a.MaxLimit)}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("RateLimit %s/%s: %w", rl.Namespace, rl.Name, err)
	}
	return l, nil
}

// nonNegative is an optional count as the API's uint32, 0 when unset.
func nonNegative(p *int32) uint32 {
	if p == nil {
		return 0
	}
	return uint32(max(0, *p))
}
