package routemodel

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// ControllerName is the controllerName of the route status entries
// Trellis writes (one per Service parent).
const ControllerName gwv1.GatewayController = "trellis.io/mesh-controller"

// maxParents is the CRD's bound on status.parents.
const maxParents = 32

// ParentStatuses returns the status entries of r's Service parents:
// Accepted (the Service and port exist, and the route can be served as
// written) and ResolvedRefs (every backend, mirrors included, resolves,
// and no filter is a custom one: see UnresolvedFilter).
// Conditions carry no transition time: MergeParents sets it.
func ParentStatuses(r *Route, l Lookup, domain string) []gwv1.RouteParentStatus {
	resolved := resolvedRefs(r, l, domain)
	var out []gwv1.RouteParentStatus
	for _, ref := range r.Parents {
		if ServiceParentKey(r.Meta.Namespace, ref) == "" {
			continue // another controller's parent
		}
		out = append(out, gwv1.RouteParentStatus{
			ParentRef:      ref,
			ControllerName: ControllerName,
			Conditions:     []metav1.Condition{accepted(r, ref, l), resolved},
		})
	}
	for i := range out {
		for j := range out[i].Conditions {
			out[i].Conditions[j].ObservedGeneration = r.Meta.Generation
		}
	}
	return out
}

func accepted(r *Route, ref gwv1.ParentReference, l Lookup) metav1.Condition {
	c := metav1.Condition{Type: string(gwv1.RouteConditionAccepted), Status: metav1.ConditionFalse, Reason: string(gwv1.RouteReasonNoMatchingParent)}
	ns := string(Deref(ref.Namespace, gwv1.Namespace(r.Meta.Namespace)))
	svc := lookupService(l, ns, string(ref.Name))
	switch {
	case svc == nil:
		c.Message = fmt.Sprintf("no Service %s/%s", ns, ref.Name)
	case ref.Port != nil && !hasPort(svc, int32(*ref.Port)):
		c.Message = fmt.Sprintf("Service %s/%s has no port %d", ns, ref.Name, *ref.Port)
	default:
		if err := Unsupported(r); err != nil {
			c.Reason, c.Message = string(gwv1.RouteReasonUnsupportedValue), err.Error()
			return c
		}
		c.Status, c.Reason = metav1.ConditionTrue, string(gwv1.RouteReasonAccepted)
		if errs := Annotations(r.Meta.Annotations).Errs; len(errs) > 0 {
			c.Message = "annotations ignored: " + errors.Join(errs...).Error()
		}
	}
	return c
}

func resolvedRefs(r *Route, l Lookup, domain string) metav1.Condition {
	ok := metav1.Condition{Type: string(gwv1.RouteConditionResolvedRefs), Status: metav1.ConditionTrue, Reason: string(gwv1.RouteReasonResolvedRefs)}
	for _, ref := range backendRefs(r) {
		if auth, reason, msg := resolveRef(l, domain, r, ref); auth == "" {
			return metav1.Condition{Type: ok.Type, Status: metav1.ConditionFalse, Reason: string(reason), Message: msg}
		}
	}
	// A custom filter is a reference of a kind Trellis does not support.
	if err := UnresolvedFilter(r); err != nil {
		return metav1.Condition{Type: ok.Type, Status: metav1.ConditionFalse, Reason: string(gwv1.RouteReasonInvalidKind), Message: err.Error()}
	}
	return ok
}

// backendRefs are every backend r names: its backendRefs and mirrors.
func backendRefs(r *Route) []gwv1.BackendObjectReference {
	var out []gwv1.BackendObjectReference
	mirrors := func(fs []gwv1.HTTPRouteFilter) {
		for _, f := range fs {
			if f.Type == gwv1.HTTPRouteFilterRequestMirror && f.RequestMirror != nil {
				out = append(out, f.RequestMirror.BackendRef)
			}
		}
	}
	for _, rule := range r.Rules {
		mirrors(rule.Filters)
		for _, b := range rule.Backends {
			out = append(out, b.Ref.BackendObjectReference)
			mirrors(b.Filters)
		}
	}
	return out
}

// MergeParents returns have (a route's status.parents) with Trellis's
// entries replaced by want and every other controller's kept as they
// are, and whether that differs from have. A condition whose status did
// not change keeps its transition time, so an unchanged route writes
// nothing.
func MergeParents(have, want []gwv1.RouteParentStatus) ([]gwv1.RouteParentStatus, bool) {
	var out []gwv1.RouteParentStatus
	used := make([]bool, len(want))
	for _, p := range have {
		if p.ControllerName != ControllerName {
			out = append(out, p)
			continue
		}
		// Ours stays where it is (order is part of what is compared).
		for i, w := range want {
			if !used[i] && equality.Semantic.DeepEqual(p.ParentRef, w.ParentRef) {
				used[i] = true
				out = append(out, mergeConditions(p, w))
				break
			}
		}
	}
	for i, w := range want {
		if !used[i] && len(out) < maxParents {
			out = append(out, mergeConditions(gwv1.RouteParentStatus{}, w))
		}
	}
	return out, !equality.Semantic.DeepEqual(have, out)
}

// mergeConditions returns w with have's conditions updated by w's.
func mergeConditions(have, w gwv1.RouteParentStatus) gwv1.RouteParentStatus {
	conds := append([]metav1.Condition(nil), have.Conditions...)
	for _, c := range w.Conditions {
		meta.SetStatusCondition(&conds, c)
	}
	w.Conditions = conds
	return w
}
