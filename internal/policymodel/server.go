package policymodel

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/intstr"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
)

// ServerFor returns the Server that selects a pod's port, or nil. When
// several do, the oldest wins (then the first by name): the choice must
// not flip with informer order, and a newer object must not silently take
// over a port an older one already governs (the newer is marked Conflict).
func ServerFor(pod *corev1.Pod, port uint32, servers []*policyv1.Server) *policyv1.Server {
	var best *policyv1.Server
	for _, s := range servers {
		if s.Namespace != pod.Namespace || !Selects(s, pod) || !PortMatches(s.Spec.Port, pod, port) {
			continue
		}
		if best == nil || older(s, best) {
			best = s
		}
	}
	return best
}

// Selects reports whether a Server's podSelector matches a pod. A selector
// the API server should have refused selects nothing.
func Selects(s *policyv1.Server, pod *corev1.Pod) bool {
	sel, err := Selector(s.Spec.PodSelector)
	return err == nil && sel.Matches(labels.Set(pod.Labels))
}

var operators = map[metav1.LabelSelectorOperator]selection.Operator{
	metav1.LabelSelectorOpIn: selection.In, metav1.LabelSelectorOpNotIn: selection.NotIn,
	metav1.LabelSelectorOpExists: selection.Exists, metav1.LabelSelectorOpDoesNotExist: selection.DoesNotExist,
}

// Selector converts a PodSelector into a labels.Selector.
func Selector(ps policyv1.PodSelector) (labels.Selector, error) {
	sel := labels.NewSelector()
	for _, k := range slices.Sorted(maps.Keys(ps.MatchLabels)) {
		r, err := labels.NewRequirement(k, selection.Equals, []string{string(ps.MatchLabels[k])})
		if err != nil {
			return nil, fmt.Errorf("matchLabels %s: %w", k, err)
		}
		sel = sel.Add(*r)
	}
	for _, e := range ps.MatchExpressions {
		op, ok := operators[e.Operator]
		if !ok {
			return nil, fmt.Errorf("matchExpressions %s: operator %q", e.Key, e.Operator)
		}
		vals := make([]string, len(e.Values))
		for i, v := range e.Values {
			vals[i] = string(v)
		}
		r, err := labels.NewRequirement(e.Key, op, vals)
		if err != nil {
			return nil, fmt.Errorf("matchExpressions %s: %w", e.Key, err)
		}
		sel = sel.Add(*r)
	}
	return sel, nil
}

// PortMatches reports whether a Server's port names the pod's port: the
// number itself, or the name of one of the pod's container ports whose
// number it is.
func PortMatches(p intstr.IntOrString, pod *corev1.Pod, port uint32) bool {
	if p.Type == intstr.Int {
		return p.IntVal > 0 && uint32(p.IntVal) == port
	}
	return slices.Contains(namedPorts(pod, p.StrVal), port)
}

// namedPorts returns the numbers of a pod's container ports called name.
func namedPorts(pod *corev1.Pod, name string) []uint32 {
	var out []uint32
	for _, ct := range slices.Concat(pod.Spec.Containers, pod.Spec.InitContainers) {
		for _, cp := range ct.Ports {
			if name != "" && cp.Name == name && cp.ContainerPort > 0 && cp.ContainerPort <= 65535 {
				out = append(out, uint32(cp.ContainerPort))
			}
		}
	}
	return out
}

// ServerPorts returns the port numbers a Server names on a pod.
func ServerPorts(s *policyv1.Server, pod *corev1.Pod) []uint32 {
	if s.Spec.Port.Type == intstr.Int {
		if n := s.Spec.Port.IntVal; n > 0 && n <= 65535 {
			return []uint32{uint32(n)}
		}
		return nil
	}
	return namedPorts(pod, s.Spec.Port.StrVal)
}

var protocols = map[policyv1.Protocol]apiv1.ProtocolHint_Protocol{
	policyv1.ProtocolUnknown: apiv1.ProtocolHint_UNKNOWN,
	policyv1.ProtocolHTTP1:   apiv1.ProtocolHint_HTTP1,
	policyv1.ProtocolHTTP2:   apiv1.ProtocolHint_HTTP2,
	policyv1.ProtocolGRPC:    apiv1.ProtocolHint_GRPC,
	policyv1.ProtocolOpaque:  apiv1.ProtocolHint_OPAQUE,
	// TLS: the app terminates TLS itself; to the proxy its bytes are opaque.
	policyv1.ProtocolTLS: apiv1.ProtocolHint_OPAQUE,
}

var accessPolicies = map[policyv1.AccessPolicy]apiv1.AccessPolicy{
	policyv1.AccessDeny:                 apiv1.AccessPolicy_DENY,
	policyv1.AccessAudit:                apiv1.AccessPolicy_AUDIT,
	policyv1.AccessAllAuthenticated:     apiv1.AccessPolicy_ALL_AUTHENTICATED,
	policyv1.AccessClusterAuthenticated: apiv1.AccessPolicy_CLUSTER_AUTHENTICATED,
	policyv1.AccessAllUnauthenticated:   apiv1.AccessPolicy_ALL_UNAUTHENTICATED,
}

// Access converts an access policy or default value ("deny", ...); ok is
// false for anything else.
func Access(v policyv1.AccessPolicy) (apiv1.AccessPolicy, bool) {
	a, ok := accessPolicies[v]
	return a, ok
}

// AccessValues are the values of accessPolicy and of the default inbound
// policy, in the order the docs list them.
func AccessValues() []string {
	return []string{string(policyv1.AccessDeny), string(policyv1.AccessAudit), string(policyv1.AccessAllAuthenticated),
		string(policyv1.AccessClusterAuthenticated), string(policyv1.AccessAllUnauthenticated)}
}

// serverAccess is a Server's accessPolicy; unset (an object stored before
// the field existed) or unknown is deny, as the CRD's default.
func serverAccess(s *policyv1.Server) apiv1.AccessPolicy {
	if a, ok := Access(s.Spec.AccessPolicy); ok {
		return a
	}
	return apiv1.AccessPolicy_DENY
}

// serverPolicy builds the answer of a port a Server selects.
func serverPolicy(srv *policyv1.Server, in Input) *apiv1.ServerPolicy {
	access := serverAccess(srv)
	p := &apiv1.ServerPolicy{
		Name:     "server/" + srv.Name,
		Protocol: protocols[srv.Spec.Protocol], // "" and unknown values: detect
		Access:   access,
		// The old field, for proxies that do not know access.
		Audit:  access == apiv1.AccessPolicy_AUDIT,
		Source: SourceServer,
	}
	for _, ap := range byName(in.Authz) {
		if TargetsServer(ap, srv) {
			if a, err := Authorization(ap, in.TrustDomain); err == nil {
				p.Authorizations = append(p.Authorizations, a)
			}
		}
	}
	p.Routes = routes(srv, in)
	if rl := RateLimitFor(srv, in.RateLimits); rl != nil {
		// An invalid RateLimit (AcceptRateLimit: Invalid) limits nothing.
		p.Limits, _ = Limits(rl, in.TrustDomain)
		if p.Limits != nil {
			// The kubelet's probes must not be refused because the app
			// is busy: the proxy exempts them (Limits.probes).
			p.Limits.Probes = answer.Probes(ProbePaths(in.Pods, in.Port))
		}
	}
	return p
}

// Targets reports whether a RateLimit's targetRef from namespace ns names
// the Server.
func Targets(ns string, ref policyv1.RateLimitTargetRef, srv *policyv1.Server) bool {
	return ns == srv.Namespace && ref.Name == srv.Name && ref.Kind == policyv1.KindServer &&
		(ref.Group == "" || ref.Group == policyv1.GroupName)
}

// TargetsServer reports whether an AuthorizationPolicy applies to every
// call to the Server: it names the Server, or the Server's namespace.
func TargetsServer(ap *policyv1.AuthorizationPolicy, srv *policyv1.Server) bool {
	ref := ap.Spec.TargetRef
	if ap.Namespace != srv.Namespace {
		return false
	}
	switch ref.Kind {
	case policyv1.KindServer:
		return ref.Name == srv.Name && (ref.Group == "" || ref.Group == policyv1.GroupName)
	case policyv1.KindNamespace:
		return ref.Name == srv.Namespace && ref.Group == ""
	}
	return false
}

// RateLimitFor returns the RateLimit of a Server, the oldest when several
// target it (then the first by name), or nil.
func RateLimitFor(srv *policyv1.Server, limits []*policyv1.RateLimit) *policyv1.RateLimit {
	var best *policyv1.RateLimit
	for _, rl := range limits {
		if Targets(rl.Namespace, rl.Spec.TargetRef, srv) && (best == nil || olderMeta(&rl.ObjectMeta, &best.ObjectMeta)) {
			best = rl
		}
	}
	return best
}
