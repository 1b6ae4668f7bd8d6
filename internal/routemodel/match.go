package routemodel

import (
	"regexp"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// HTTPMatch converts one HTTPRoute match, every field the Gateway API
// has: path (exact, prefix, regular expression), headers, query
// parameters and method. ok is false for a type this version does not
// know (a newer CRD's value), which must not be read as "match all".
func HTTPMatch(m gwv1.HTTPRouteMatch) (rm *apiv1.RouteMatch, ok bool) {
	rm = &apiv1.RouteMatch{PathPrefix: "/"}
	if m.Path != nil && m.Path.Value != nil {
		switch Deref(m.Path.Type, gwv1.PathMatchPathPrefix) {
		case gwv1.PathMatchExact:
			rm.PathPrefix, rm.PathExact = "", *m.Path.Value
		case gwv1.PathMatchPathPrefix:
			rm.PathPrefix = *m.Path.Value
		case gwv1.PathMatchRegularExpression:
			rm.PathPrefix, rm.PathRegex = "", *m.Path.Value
		default:
			return nil, false
		}
	}
	if m.Method != nil {
		rm.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		t := Deref(h.Type, gwv1.HeaderMatchExact)
		if t != gwv1.HeaderMatchExact && t != gwv1.HeaderMatchRegularExpression {
			return nil, false
		}
		rm.Headers = append(rm.Headers, &apiv1.RouteMatch_Header{Name: string(h.Name), Value: h.Value, Regex: t == gwv1.HeaderMatchRegularExpression})
	}
	for _, q := range m.QueryParams {
		t := Deref(q.Type, gwv1.QueryParamMatchExact)
		if t != gwv1.QueryParamMatchExact && t != gwv1.QueryParamMatchRegularExpression {
			return nil, false
		}
		rm.QueryParams = append(rm.QueryParams, &apiv1.RouteMatch_Header{Name: string(q.Name), Value: q.Value, Regex: t == gwv1.QueryParamMatchRegularExpression})
	}
	return rm, true
}

// GRPCMatch converts one GRPCRoute match: a service and method are the
// exact path /service/method, a service alone the prefix /service/, a
// method alone (any service) the expression ^/[^/]+/method$; a regular
// expression service or method becomes a path expression. Headers as
// HTTPMatch.
func GRPCMatch(m gwv1.GRPCRouteMatch) (rm *apiv1.RouteMatch, ok bool) {
	rm = &apiv1.RouteMatch{PathPrefix: "/"}
	if mm := m.Method; mm != nil {
		svc, meth := Deref(mm.Service, ""), Deref(mm.Method, "")
		switch Deref(mm.Type, gwv1.GRPCMethodMatchExact) {
		case gwv1.GRPCMethodMatchExact:
			switch {
			case svc != "" && meth != "":
				rm.PathPrefix, rm.PathExact = "", "/"+svc+"/"+meth
			case svc != "":
				rm.PathPrefix = "/" + svc + "/"
			case meth != "":
				rm.PathPrefix, rm.PathRegex = "", "^/[^/]+/"+regexp.QuoteMeta(meth)+"$"
			}
		case gwv1.GRPCMethodMatchRegularExpression:
			rm.PathPrefix, rm.PathRegex = "", "^/"+orAny(svc)+"/"+orAny(meth)+"$"
		default:
			return nil, false
		}
	}
	for _, h := range m.Headers {
		t := Deref(h.Type, gwv1.GRPCHeaderMatchExact)
		if t != gwv1.GRPCHeaderMatchExact && t != gwv1.GRPCHeaderMatchRegularExpression {
			return nil, false
		}
		rm.Headers = append(rm.Headers, &apiv1.RouteMatch_Header{Name: string(h.Name), Value: h.Value, Regex: t == gwv1.GRPCHeaderMatchRegularExpression})
	}
	return rm, true
}

// orAny is a gRPC name expression, or any name when empty (a regex
// method match may leave service or method out).
func orAny(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return "(?:" + re + ")"
}

// Deref returns *p, or def when p is nil.
func Deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
