package policymodel

import (
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/routematch"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

// IsServerParent reports whether a route's parentRef names the Server (a
// route of namespace ns; parentRefs default to a Gateway, so group and
// kind must be given).
func IsServerParent(ns string, ref gwv1.ParentReference, srv *policyv1.Server) bool {
	return ref.Group != nil && string(*ref.Group) == policyv1.GroupName &&
		ref.Kind != nil && string(*ref.Kind) == policyv1.KindServer &&
		string(ref.Name) == srv.Name && ns == srv.Namespace &&
		(ref.Namespace == nil || string(*ref.Namespace) == srv.Namespace)
}

// HasServerParent reports whether any of a route's parentRefs is the
// Server.
func HasServerParent(ns string, refs []gwv1.ParentReference, srv *policyv1.Server) bool {
	return slices.ContainsFunc(refs, func(r gwv1.ParentReference) bool { return IsServerParent(ns, r, srv) })
}

// routes builds the inbound routes of a Server: its HTTPRoutes and
// GRPCRoutes by name, each with the authorizations that target it. A
// route none of whose matches can be expressed is left out: sent with no
// matches it would match every request.
func routes(srv *policyv1.Server, in Input) []*apiv1.InboundRoute {
	var out []*apiv1.InboundRoute
	add := func(kind, name string, matches []*apiv1.RouteMatch, ok bool) {
		if !ok {
			return
		}
		r := &apiv1.InboundRoute{Name: srv.Namespace + "/" + name, Matches: matches}
		for _, ap := range byName(in.Authz) {
			ref := ap.Spec.TargetRef
			if ap.Namespace == srv.Namespace && ref.Kind == kind && ref.Name == name && ref.Group == policyv1.GatewayGroup {
				if a, err := Authorization(ap, in.TrustDomain); err == nil {
					r.Authorizations = append(r.Authorizations, a)
				}
			}
		}
		out = append(out, r)
	}
	for _, hr := range byName(in.HTTPRoutes) {
		if HasServerParent(hr.Namespace, hr.Spec.ParentRefs, srv) {
			m, ok := httpMatches(hr)
			add(policyv1.KindHTTPRoute, hr.Name, m, ok)
		}
	}
	for _, gr := range byName(in.GRPCRoutes) {
		if HasServerParent(gr.Namespace, gr.Spec.ParentRefs, srv) {
			m, ok := grpcMatches(gr)
			add(policyv1.KindGRPCRoute, gr.Name, m, ok)
		}
	}
	return out
}

// httpMatches converts an HTTPRoute's matches. A rule without matches
// matches every request (Gateway API's default of path prefix "/"), so
// the route's are then none (every request). A match the proxy cannot
// evaluate (regular-expression paths, query parameters) is left out: the
// route then matches less, and its authorizations allow less. ok is false
// when nothing is left of matches that were there.
func httpMatches(hr *gwv1.HTTPRoute) (out []*apiv1.RouteMatch, ok bool) {
	rules := make([][]gwv1.HTTPRouteMatch, len(hr.Spec.Rules))
	for i, r := range hr.Spec.Rules {
		rules[i] = r.Matches
	}
	return convertMatches(rules, httpMatch)
}

// convertMatches converts the matches of a route's rules (see httpMatches).
func convertMatches[M any](rules [][]M, convert func(M) (*apiv1.RouteMatch, bool)) (out []*apiv1.RouteMatch, ok bool) {
	had := false
	for _, matches := range rules {
		if len(matches) == 0 {
			return nil, true
		}
		for _, m := range matches {
			had = true
			// One the proxy's evaluator refuses (a regex RE2 does not
			// have) would make the proxy refuse the whole answer and keep
			// its default for the port: left out instead, as above.
			if rm, ok := convert(m); ok && compiles(rm) {
				out = append(out, rm)
			}
		}
	}
	return out, !had || len(out) > 0
}

// httpMatch is routemodel.HTTPMatch less what the inbound evaluator
// cannot express (regular-expression paths, query parameters).
func httpMatch(m gwv1.HTTPRouteMatch) (*apiv1.RouteMatch, bool) {
	return inboundOnly(routemodel.HTTPMatch(m))
}

// inboundOnly refuses a match with a path expression or query
// parameters: the inbound route table (internal/routematch) has neither,
// and would read the match as wider than it is.
func inboundOnly(rm *apiv1.RouteMatch, ok bool) (*apiv1.RouteMatch, bool) {
	if !ok || rm.PathRegex != "" || len(rm.QueryParams) > 0 {
		return nil, false
	}
	return rm, true
}

// grpcMatches converts a GRPCRoute's matches as httpMatches does: a
// service and method are the exact path /service/method, a service alone
// the prefix /service/; a method alone (any service) or a regular
// expression cannot be expressed.
func grpcMatches(gr *gwv1.GRPCRoute) (out []*apiv1.RouteMatch, ok bool) {
	rules := make([][]gwv1.GRPCRouteMatch, len(gr.Spec.Rules))
	for i, r := range gr.Spec.Rules {
		rules[i] = r.Matches
	}
	return convertMatches(rules, grpcMatch)
}

func grpcMatch(m gwv1.GRPCRouteMatch) (*apiv1.RouteMatch, bool) {
	return inboundOnly(routemodel.GRPCMatch(m))
}

func compiles(rm *apiv1.RouteMatch) bool {
	_, err := routematch.Compile(rm)
	return err == nil
}

// routeParents returns the parentRefs of the route of kind and name in ns.
func routeParents(objs Objects, ns, kind, name string) ([]gwv1.ParentReference, bool) {
	if kind == policyv1.KindHTTPRoute {
		for _, r := range objs.HTTPRoutes {
			if r.Namespace == ns && r.Name == name {
				return r.Spec.ParentRefs, true
			}
		}
		return nil, false
	}
	for _, r := range objs.GRPCRoutes {
		if r.Namespace == ns && r.Name == name {
			return r.Spec.ParentRefs, true
		}
	}
	return nil, false
}

func hasExistingServer(servers []*policyv1.Server, ns string, refs []gwv1.ParentReference) bool {
	for _, s := range servers {
		if s.Namespace == ns && HasServerParent(ns, refs, s) {
			return true
		}
	}
	return false
}
