package policy

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

// Accepted is the condition an object should carry, without its
// transition time and generation (the status writer sets those).
type Accepted struct {
	OK      bool
	Reason  string
	Message string
}

// Condition returns the Accepted condition for an object of a generation.
func (a Accepted) Condition(generation int64) metav1.Condition {
	st := metav1.ConditionTrue
	if !a.OK {
		st = metav1.ConditionFalse
	}
	return metav1.Condition{Type: policyv1.ConditionAccepted, Status: st, Reason: a.Reason, Message: a.Message, ObservedGeneration: generation}
}

var accepted = Accepted{OK: true, Reason: policyv1.ReasonAccepted, Message: "in use"}

// AcceptServer: a Server the API server admitted is always usable (its
// pods may come later).
func AcceptServer(*policyv1.Server) Accepted { return accepted }

// target finds the Server a targetRef names, or says why there is none.
func target(ns string, ref policyv1.ServerRef, servers []*policyv1.Server) (*policyv1.Server, Accepted) {
	for _, s := range servers {
		if Targets(ns, ref, s) {
			return s, accepted
		}
	}
	return nil, Accepted{Reason: policyv1.ReasonTargetNotFound,
		Message: fmt.Sprintf("targetRef names Server %q, which does not exist in namespace %s", ref.Name, ns)}
}

// AcceptAuthorizationPolicy checks what the schema cannot: the target
// exists, and the networks translate.
func AcceptAuthorizationPolicy(ap *policyv1.AuthorizationPolicy, servers []*policyv1.Server) Accepted {
	if _, a := target(ap.Namespace, ap.Spec.TargetRef, servers); !a.OK {
		return a
	}
	if _, err := authorization(ap); err != nil {
		return Accepted{Reason: policyv1.ReasonInvalid, Message: err.Error()}
	}
	return accepted
}

// AcceptRateLimit checks the target exists and no older RateLimit
// already limits it.
func AcceptRateLimit(rl *policyv1.RateLimit, servers []*policyv1.Server, limits []*policyv1.RateLimit) Accepted {
	srv, a := target(rl.Namespace, rl.Spec.TargetRef, servers)
	if !a.OK {
		return a
	}
	if first := RateLimitFor(srv, limits); first != nil && first.Name != rl.Name {
		return Accepted{Reason: policyv1.ReasonConflict,
			Message: fmt.Sprintf("Server %q is already limited by the older RateLimit %q", srv.Name, first.Name)}
	}
	return accepted
}
