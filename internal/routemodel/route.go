// Package routemodel translates the Gateway API's mesh routes (GAMMA: an
// HTTPRoute or GRPCRoute whose parentRef is a Service) into the
// Destination API's outbound route configuration of one service port
// (apiv1.RouteConfig), and says what each route's status should be. It is
// pure: objects in, answer out, no informers; the Kubernetes controller
// (controller/k8s/routes) and local mode (controller/local) both call it.
//
// Semantics (docs/traffic.md): producer routes (in the Service's
// namespace) apply to every caller; consumer routes (in the caller's
// namespace, parent a Service of another namespace) apply only to callers
// of that namespace and, when there is any, replace the producer routes.
// Routes are ordered oldest first, then by namespace/name; each rule is
// one apiv1.Route named "namespace/name" in that order.
package routemodel

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Kinds of routes, as in their objects and ReferenceGrants.
const (
	KindHTTPRoute = "HTTPRoute"
	KindGRPCRoute = "GRPCRoute"
)

// Route is an HTTPRoute or a GRPCRoute, in the one shape the translation
// reads (a GRPCRoute's filters are a subset of an HTTPRoute's).
type Route struct {
	Kind    string
	Meta    *metav1.ObjectMeta
	Parents []gwv1.ParentReference
	Rules   []Rule
}

// Rule is one rule of a route.
type Rule struct {
	// Matches are the converted matches; a nil entry is one this version
	// cannot express (the route is then not accepted).
	Matches  []*apiv1.RouteMatch
	Filters  []gwv1.HTTPRouteFilter
	Backends []Backend
	Timeouts *gwv1.HTTPRouteTimeouts
	Retry    *gwv1.HTTPRouteRetry
}

// Backend is one backendRef with its filters.
type Backend struct {
	Ref     gwv1.BackendRef
	Filters []gwv1.HTTPRouteFilter
}

// FromHTTP reads an HTTPRoute.
func FromHTTP(hr *gwv1.HTTPRoute) Route {
	r := Route{Kind: KindHTTPRoute, Meta: &hr.ObjectMeta, Parents: hr.Spec.ParentRefs}
	for _, rule := range hr.Spec.Rules {
		out := Rule{Filters: rule.Filters, Timeouts: rule.Timeouts, Retry: rule.Retry}
		for _, m := range rule.Matches {
			rm, _ := HTTPMatch(m)
			out.Matches = append(out.Matches, rm)
		}
		for _, b := range rule.BackendRefs {
			out.Backends = append(out.Backends, Backend{Ref: b.BackendRef, Filters: b.Filters})
		}
		r.Rules = append(r.Rules, out)
	}
	return r
}

// FromGRPC reads a GRPCRoute.
func FromGRPC(gr *gwv1.GRPCRoute) Route {
	r := Route{Kind: KindGRPCRoute, Meta: &gr.ObjectMeta, Parents: gr.Spec.ParentRefs}
	for _, rule := range gr.Spec.Rules {
		out := Rule{Filters: grpcFilters(rule.Filters)}
		for _, m := range rule.Matches {
			rm, _ := GRPCMatch(m)
			out.Matches = append(out.Matches, rm)
		}
		for _, b := range rule.BackendRefs {
			out.Backends = append(out.Backends, Backend{Ref: b.BackendRef, Filters: grpcFilters(b.Filters)})
		}
		r.Rules = append(r.Rules, out)
	}
	return r
}

func grpcFilters(in []gwv1.GRPCRouteFilter) []gwv1.HTTPRouteFilter {
	out := make([]gwv1.HTTPRouteFilter, 0, len(in))
	for _, f := range in {
		out = append(out, gwv1.HTTPRouteFilter{
			Type:                   gwv1.HTTPRouteFilterType(f.Type),
			RequestHeaderModifier:  f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier,
			RequestMirror:          f.RequestMirror,
			ExtensionRef:           f.ExtensionRef,
		})
	}
	return out
}

// IsServiceParent reports whether ref (of a route in namespace ns) names
// the Service svc; port 0 asks about any port.
func IsServiceParent(ns string, ref gwv1.ParentReference, svc *corev1.Service) bool {
	return isServiceRef(ref.Group, ref.Kind) && string(ref.Name) == svc.Name &&
		string(Deref(ref.Namespace, gwv1.Namespace(ns))) == svc.Namespace
}

// ServiceParentKey returns "namespace/name" of the Service ref names, or
// "" when ref names no Service (the index routes are looked up by).
func ServiceParentKey(ns string, ref gwv1.ParentReference) string {
	if !isServiceRef(ref.Group, ref.Kind) {
		return ""
	}
	return string(Deref(ref.Namespace, gwv1.Namespace(ns))) + "/" + string(ref.Name)
}

// isServiceRef: a parentRef defaults to a Gateway, so the kind must be
// given; the core group is "" or "core".
func isServiceRef(g *gwv1.Group, k *gwv1.Kind) bool {
	group := Deref(g, "")
	return (group == "" || group == "core") && k != nil && *k == "Service"
}

// attaches reports whether r attaches to port of svc through any parentRef
// (one with a port applies to that port only).
func attaches(r *Route, svc *corev1.Service, port int32) bool {
	return slices.ContainsFunc(r.Parents, func(ref gwv1.ParentReference) bool {
		return IsServiceParent(r.Meta.Namespace, ref, svc) && (ref.Port == nil || int32(*ref.Port) == port)
	})
}

// order is Gateway API precedence among routes: the oldest first, then
// by namespace/name.
func order(a, b *Route) int {
	if c := a.Meta.CreationTimestamp.Compare(b.Meta.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Or(cmp.Compare(a.Meta.Namespace, b.Meta.Namespace), cmp.Compare(a.Meta.Name, b.Meta.Name))
}
