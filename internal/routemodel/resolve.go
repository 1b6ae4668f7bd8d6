package routemodel

import (
	"fmt"
	corev1 "k8s.io/api/core/v1"
	"slices"
	"strconv"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// resolve returns the authority of a backendRef of r, or "" with the
// ResolvedRefs reason and message saying why it does not resolve.
func (in Input) resolve(r *Route, ref gwv1.BackendObjectReference) (string, gwv1.RouteConditionReason, string) {
	return resolveRef(in.Lookup, in.ClusterDomain, r, ref)
}

func resolveRef(l Lookup, domain string, r *Route, ref gwv1.BackendObjectReference) (string, gwv1.RouteConditionReason, string) {
	ns := string(Deref(ref.Namespace, gwv1.Namespace(r.Meta.Namespace)))
	name := ns + "/" + string(ref.Name)
	if !isServiceRef(ref.Group, ptrOr(ref.Kind, gwv1.Kind("Service"))) {
		return "", gwv1.RouteReasonInvalidKind, fmt.Sprintf("backend %s: kind %s/%s is not a Service", name, Deref(ref.Group, ""), Deref(ref.Kind, ""))
	}
	// A consumer route may send to its parent Service itself without a
	// ReferenceGrant: that is where the traffic goes anyway (GAMMA; the
	// conformance suite's MeshConsumerRoute). Any other Service of
	// another namespace needs its owner's grant.
	if ns != r.Meta.Namespace && !r.isParent(name) && (l == nil || !l.Granted(r.Kind, r.Meta.Namespace, ns, string(ref.Name))) {
		return "", gwv1.RouteReasonRefNotPermitted, fmt.Sprintf("backend %s: no ReferenceGrant in %s lets %ss of %s refer to it", name, ns, r.Kind, r.Meta.Namespace)
	}
	svc := lookupService(l, ns, string(ref.Name))
	if svc == nil {
		return "", gwv1.RouteReasonBackendNotFound, fmt.Sprintf("backend %s: no such Service", name)
	}
	if ref.Port == nil {
		return "", gwv1.RouteReasonUnsupportedValue, fmt.Sprintf("backend %s: a Service backend needs a port", name)
	}
	port := int32(*ref.Port)
	if !hasPort(svc, port) {
		return "", gwv1.RouteReasonBackendNotFound, fmt.Sprintf("backend %s: the Service has no port %d", name, port)
	}
	return string(ref.Name) + "." + ns + ".svc." + domain + ":" + strconv.Itoa(int(port)), gwv1.RouteReasonResolvedRefs, ""
}

func ptrOr[T any](p *T, def T) *T {
	if p == nil {
		return &def
	}
	return p
}

func lookupService(l Lookup, ns, name string) *corev1.Service {
	if l == nil {
		return nil
	}
	return l.Service(ns, name)
}

func hasPort(svc *corev1.Service, port int32) bool {
	return slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port })
}

// isParent reports whether the Service "namespace/name" is a parent of r.
func (r *Route) isParent(name string) bool {
	return slices.ContainsFunc(r.Parents, func(ref gwv1.ParentReference) bool {
		return ServiceParentKey(r.Meta.Namespace, ref) == name
	})
}
