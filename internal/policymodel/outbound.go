package policymodel

import (
	"fmt"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// TargetsService reports whether a RateLimit names the Service ns/name
// (an outbound limit: each client proxy limits its own requests).
func TargetsService(rl *policyv1.RateLimit, ns, name string) bool {
	ref := rl.Spec.TargetRef
	return rl.Namespace == ns && ref.Kind == policyv1.KindService && ref.Name == name && ref.Group == ""
}

// ServiceRateLimitFor returns the RateLimit of the Service ns/name, the
// oldest when several target it (then the first by name), or nil.
func ServiceRateLimitFor(ns, name string, limits []*policyv1.RateLimit) *policyv1.RateLimit {
	var best *policyv1.RateLimit
	for _, rl := range limits {
		if TargetsService(rl, ns, name) && (best == nil || olderMeta(&rl.ObjectMeta, &best.ObjectMeta)) {
			best = rl
		}
	}
	return best
}

// OutboundLimit translates a RateLimit on a Service into the limit sent
// to its client proxies with the Service's routes. It refuses what only a
// Server's limit can carry (the schema refuses it too; the local store and
// objects written before the schema said so reach here): such a RateLimit
// limits nothing, rather than part of what it says.
func OutboundLimit(rl *policyv1.RateLimit) (*apiv1.OutboundLimit, error) {
	s := rl.Spec
	var bad []string
	if s.PerClient != nil {
		bad = append(bad, "perClient")
	}
	if len(s.Overrides) > 0 {
		bad = append(bad, "overrides")
	}
	if s.Concurrency != nil {
		bad = append(bad, "concurrency")
	}
	if s.AdaptiveConcurrency != nil {
		bad = append(bad, "adaptiveConcurrency")
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("RateLimit %s/%s targets a Service: %v apply to a Server only (each client proxy limits its own requests: set requestsPerSecond and burst)", rl.Namespace, rl.Name, bad)
	}
	if nonNegative(s.RequestsPerSecond) == 0 {
		return nil, fmt.Errorf("RateLimit %s/%s targets a Service: requestsPerSecond must be at least 1", rl.Namespace, rl.Name)
	}
	return &apiv1.OutboundLimit{
		Name:              rl.Namespace + "/" + rl.Name,
		RequestsPerSecond: nonNegative(s.RequestsPerSecond),
		Burst:             nonNegative(s.Burst),
	}, nil
}

// ServiceLimit is the outbound limit of the Service ns/name: its oldest
// RateLimit's, nil when it has none or that one is invalid (an invalid
// RateLimit limits nothing, and a newer one does not stand in for it:
// AcceptRateLimit marks the newer one Conflict).
func ServiceLimit(ns, name string, limits []*policyv1.RateLimit) *apiv1.OutboundLimit {
	rl := ServiceRateLimitFor(ns, name, limits)
	if rl == nil {
		return nil
	}
	l, err := OutboundLimit(rl)
	if err != nil {
		return nil
	}
	return l
}

// acceptServiceRateLimit is AcceptRateLimit for a RateLimit on a Service:
// the Service exists (serviceExists nil: not known, taken as existing),
// no older RateLimit limits it, and the limit translates.
func acceptServiceRateLimit(rl *policyv1.RateLimit, limits []*policyv1.RateLimit, serviceExists func(ns, name string) bool) Verdict {
	ref := rl.Spec.TargetRef
	if ref.Group != "" {
		c := Condition{Reason: policyv1.ReasonInvalid, Message: fmt.Sprintf("targetRef: a Service has group \"\", not %q", ref.Group)}
		return Verdict{Accepted: c, ResolvedRefs: &c}
	}
	if serviceExists != nil && !serviceExists(rl.Namespace, ref.Name) {
		c := Condition{Reason: policyv1.ReasonTargetNotFound,
			Message: fmt.Sprintf("targetRef names Service %q, which does not exist in namespace %s", ref.Name, rl.Namespace)}
		return Verdict{Accepted: c, ResolvedRefs: &c}
	}
	r := resolved
	if first := ServiceRateLimitFor(rl.Namespace, ref.Name, limits); first != nil && first.Name != rl.Name {
		return Verdict{ResolvedRefs: &r, Accepted: Condition{Reason: policyv1.ReasonConflict,
			Message: fmt.Sprintf("Service %q is already limited by the older RateLimit %q", ref.Name, first.Name)}}
	}
	if _, err := OutboundLimit(rl); err != nil {
		return Verdict{ResolvedRefs: &r, Accepted: Condition{Reason: policyv1.ReasonInvalid, Message: err.Error()}}
	}
	return Verdict{ResolvedRefs: &r, Accepted: Condition{OK: true, Reason: policyv1.ReasonAccepted,
		Message: "translated into the outbound limit sent to every client proxy of its Service (each client proxy has its own bucket)"}}
}
