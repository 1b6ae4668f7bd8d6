// Package policy serves Policy.WatchInbound in Kubernetes mode from the
// shared informers (Servers, AuthorizationPolicies, RateLimits, inbound
// HTTPRoutes/GRPCRoutes, pods), translated by internal/policymodel, and
// writes the status conditions of the policy objects (controller/status).
package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// conditions are the conditions a verdict sets on an object of a
// generation: Accepted, and ResolvedRefs for kinds with a targetRef.
func conditions(v policymodel.Verdict, generation int64) []metav1.Condition {
	out := []metav1.Condition{condition(policyv1.ConditionAccepted, v.Accepted, generation)}
	if v.ResolvedRefs != nil {
		out = append(out, condition(policyv1.ConditionResolvedRefs, *v.ResolvedRefs, generation))
	}
	return out
}

func condition(typ string, c policymodel.Condition, generation int64) metav1.Condition {
	st := metav1.ConditionTrue
	if !c.OK {
		st = metav1.ConditionFalse
	}
	return metav1.Condition{Type: typ, Status: st, Reason: c.Reason, Message: c.Message, ObservedGeneration: generation}
}
