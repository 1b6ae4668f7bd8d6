package storepolicy

import (
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Sources of a ServerPolicy (api/v1/policy.proto).
const (
	SourceServer  = "server"
	SourceDefault = "default"
)

// Resolve is the answer for a port of the workloads of one identity in
// namespace ns, given their labels (one map per workload or pod): the
// first Server of p (file order, as the oldest on Kubernetes) that
// selects one of them on that port, else nil (the caller answers its
// default: source "default", access unspecified, so the proxy applies its
// own --default-inbound-policy).
func Resolve(p Policies, ns string, labels []map[string]string, port uint32) *apiv1.ServerPolicy {
	for _, s := range p.Servers {
		if s.Namespace != ns || uint32(s.Spec.Port.IntVal) != port {
			continue
		}
		for _, l := range labels {
			if selects(s.Spec.PodSelector, l) {
				return serverPolicy(s, p)
			}
		}
	}
	return nil
}

// selects matches a validated selector (controller/store checked its
// operators) against a workload's labels.
func selects(ps policyv1.PodSelector, labels map[string]string) bool {
	for k, v := range ps.MatchLabels {
		if got, ok := labels[k]; !ok || got != string(v) {
			return false
		}
	}
	for _, e := range ps.MatchExpressions {
		v, has := labels[e.Key]
		in := has && slices.Contains(e.Values, policyv1.LabelValue(v))
		ok := map[string]bool{"In": in, "NotIn": !in, "Exists": has, "DoesNotExist": !has}[string(e.Operator)]
		if !ok {
			return false
		}
	}
	return true
}

var serverProtocols = map[policyv1.Protocol]apiv1.ProtocolHint_Protocol{
	policyv1.ProtocolHTTP1:  apiv1.ProtocolHint_HTTP1,
	policyv1.ProtocolHTTP2:  apiv1.ProtocolHint_HTTP2,
	policyv1.ProtocolGRPC:   apiv1.ProtocolHint_GRPC,
	policyv1.ProtocolOpaque: apiv1.ProtocolHint_OPAQUE,
	policyv1.ProtocolTLS:    apiv1.ProtocolHint_OPAQUE,
}

// serverPolicy translates a Server with the policies and routes that
// target it. A Server without accessPolicy denies what no authorization
// allows ("no policy: nobody", docs/policy.md).
func serverPolicy(srv *policyv1.Server, p Policies) *apiv1.ServerPolicy {
	sp := &apiv1.ServerPolicy{
		Name:     "server/" + srv.Name,
		Source:   SourceServer,
		Protocol: serverProtocols[srv.Spec.Protocol],
		Access:   apiv1.AccessPolicy_DENY,
	}
	for _, ap := range p.AuthorizationPolicies {
		if ap.Namespace != srv.Namespace {
			continue
		}
		ref := ap.Spec.TargetRef
		if (ref.Kind == KindServer && ref.Name == srv.Name) || ref.Kind == "Namespace" {
			sp.Authorizations = append(sp.Authorizations, authorization(ap))
		}
	}
	for _, r := range p.HTTPRoutes {
		if r.Namespace == srv.Namespace && hasParent(r, srv.Name) {
			sp.Routes = append(sp.Routes, inboundRoute(r, p.AuthorizationPolicies))
		}
	}
	return sp
}

func hasParent(r *gwv1.HTTPRoute, server string) bool {
	for _, ref := range r.Spec.ParentRefs {
		if ref.Kind != nil && string(*ref.Kind) == KindServer && string(ref.Name) == server {
			return true
		}
	}
	return false
}

// inboundRoute translates an HTTPRoute's matches and the policies that
// target it.
func inboundRoute(r *gwv1.HTTPRoute, authz []*policyv1.AuthorizationPolicy) *apiv1.InboundRoute {
	ir := &apiv1.InboundRoute{Name: r.Namespace + "/" + r.Name}
	for _, rule := range r.Spec.Rules {
		for _, m := range rule.Matches {
			ir.Matches = append(ir.Matches, routeMatch(m))
		}
	}
	for _, ap := range authz {
		ref := ap.Spec.TargetRef
		if ap.Namespace == r.Namespace && ref.Kind == KindHTTPRoute && ref.Name == r.Name {
			ir.Authorizations = append(ir.Authorizations, authorization(ap))
		}
	}
	return ir
}

func routeMatch(m gwv1.HTTPRouteMatch) *apiv1.RouteMatch {
	rm := &apiv1.RouteMatch{}
	if m.Path != nil && m.Path.Value != nil {
		if m.Path.Type != nil && *m.Path.Type == gwv1.PathMatchExact {
			rm.PathExact = *m.Path.Value
		} else {
			rm.PathPrefix = *m.Path.Value
		}
	}
	if m.Method != nil {
		rm.Method = string(*m.Method)
	}
	for _, h := range m.Headers {
		regex := h.Type != nil && *h.Type == gwv1.HeaderMatchRegularExpression
		rm.Headers = append(rm.Headers, &apiv1.RouteMatch_Header{Name: string(h.Name), Value: h.Value, Regex: regex})
	}
	return rm
}

// authorization translates one AuthorizationPolicy. Networks go out as
// nets, with their exceptions (the proxy checks them).
func authorization(ap *policyv1.AuthorizationPolicy) *apiv1.Authorization {
	a := &apiv1.Authorization{
		Name:            ap.Name,
		Unauthenticated: ap.Spec.Unauthenticated,
	}
	for _, id := range ap.Spec.Identities {
		a.Identities = append(a.Identities, string(id))
	}
	for _, ns := range ap.Spec.Namespaces {
		if ns == "*" { // every namespace: any mesh identity
			a.Identities = append(a.Identities, "*")
			continue
		}
		a.Namespaces = append(a.Namespaces, ns)
	}
	for _, n := range ap.Spec.Networks {
		net := &apiv1.Network{Cidr: n.CIDR}
		for _, e := range n.Except {
			net.Except = append(net.Except, string(e))
		}
		a.Nets = append(a.Nets, net)
	}
	// Networks alone say "from there, with or without mesh TLS"
	// (api/v1/policy.proto).
	if len(a.Nets) > 0 && len(a.Identities) == 0 && len(a.Namespaces) == 0 {
		a.Unauthenticated = true
	}
	return a
}
