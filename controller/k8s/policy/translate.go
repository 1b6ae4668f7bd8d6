// Package policy translates the policy.trellis.io objects of a namespace
// into the Policy API's answer for a workload's port (apiv1.ServerPolicy),
// serves Policy.WatchInbound from the shared informers, and decides the
// Accepted condition the status writer (controller/status) records.
//
// Semantics (docs/policy.md): a port no Server selects gets the default
// policy (every caller allowed, protocol detected), so meshing a workload
// never breaks it. A port a Server selects allows only the clients of the
// AuthorizationPolicies that target that Server (none: nobody), with the
// Server's protocol and its RateLimit.
package policy

import (
	"cmp"
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
	"github.com/trellis-mesh/trellis/controller/policy"
)

// Objects are the policy objects of one namespace.
type Objects struct {
	Servers    []*policyv1.Server
	Authz      []*policyv1.AuthorizationPolicy
	RateLimits []*policyv1.RateLimit
}

// Translate returns the policy of a workload's port. The Policy API
// names a workload by its identity, so pods is every running pod of it
// (one namespace, one service account); objs must be of that namespace
// (the API allows no cross-namespace target). When the pods are selected
// by different Servers, the oldest Server wins, as in ServerFor.
func Translate(pods []*corev1.Pod, port uint32, objs Objects) *apiv1.ServerPolicy {
	var srv *policyv1.Server
	for _, pod := range pods {
		if s := ServerFor(pod, port, objs.Servers); s != nil && (srv == nil || older(s, srv)) {
			srv = s
		}
	}
	if srv == nil {
		return policy.Default(apiv1.ProtocolHint_UNKNOWN)
	}
	return serverPolicy(srv, objs)
}

// ServerFor returns the Server that selects a pod's port, or nil. When
// several do, the oldest wins (then the first by name): the choice must
// not flip with informer order, and a newer object must not silently take
// over a port that an older one already governs.
func ServerFor(pod *corev1.Pod, port uint32, servers []*policyv1.Server) *policyv1.Server {
	var best *policyv1.Server
	for _, s := range servers {
		if s.Namespace != pod.Namespace || !selects(s, pod) || !portMatches(s.Spec.Port, pod, port) {
			continue
		}
		if best == nil || older(s, best) {
			best = s
		}
	}
	return best
}

func older(a, b *policyv1.Server) bool { return olderMeta(&a.ObjectMeta, &b.ObjectMeta) }

// olderMeta orders objects by creation, then name: a stable order that a
// newer object cannot jump.
func olderMeta(a, b *metav1.ObjectMeta) bool {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c < 0
	}
	return a.Name < b.Name
}

// selects reports whether a Server's podSelector matches a pod. A selector
// the API server should have refused (its schema) selects nothing: failing
// closed here would deny traffic, failing open would apply a Server to
// pods its author did not mean.
func selects(s *policyv1.Server, pod *corev1.Pod) bool {
	sel, err := Selector(s.Spec.PodSelector)
	return err == nil && sel.Matches(labels.Set(pod.Labels))
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
		op, ok := map[metav1.LabelSelectorOperator]selection.Operator{
			metav1.LabelSelectorOpIn: selection.In, metav1.LabelSelectorOpNotIn: selection.NotIn,
			metav1.LabelSelectorOpExists: selection.Exists, metav1.LabelSelectorOpDoesNotExist: selection.DoesNotExist,
		}[e.Operator]
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

// portMatches reports whether a Server's port names the pod's port: the
// number itself, or the name of one of the pod's container ports whose
// number it is.
func portMatches(p intstr.IntOrString, pod *corev1.Pod, port uint32) bool {
	if p.Type == intstr.Int {
		return p.IntVal > 0 && uint32(p.IntVal) == port
	}
	for _, ct := range slices.Concat(pod.Spec.Containers, pod.Spec.InitContainers) {
		for _, cp := range ct.Ports {
			if cp.Name == p.StrVal && cp.ContainerPort > 0 && uint32(cp.ContainerPort) == port {
				return true
			}
		}
	}
	return false
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

// serverPolicy builds the answer of a port a Server selects.
func serverPolicy(srv *policyv1.Server, objs Objects) *apiv1.ServerPolicy {
	p := &apiv1.ServerPolicy{
		Name:     "server/" + srv.Name,
		Protocol: protocols[srv.Spec.Protocol], // "" and unknown values: detect
	}
	authz := slices.SortedFunc(slices.Values(objs.Authz), func(a, b *policyv1.AuthorizationPolicy) int { return cmp.Compare(a.Name, b.Name) })
	for _, ap := range authz {
		if !Targets(ap.Namespace, ap.Spec.TargetRef, srv) {
			continue
		}
		a, err := authorization(ap)
		if err != nil {
			continue // not accepted (its status says why): it allows nobody
		}
		p.Authorizations = append(p.Authorizations, a)
	}
	if rl := RateLimitFor(srv, objs.RateLimits); rl != nil {
		p.Limits = &apiv1.Limits{
			RequestsPerSecond: uint32(max(0, deref(rl.Spec.RequestsPerSecond))),
			MaxConcurrency:    uint32(max(0, deref(rl.Spec.Concurrency))),
		}
	}
	return p
}

func deref(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}

// Targets reports whether a targetRef from namespace ns names the Server.
func Targets(ns string, ref policyv1.ServerRef, srv *policyv1.Server) bool {
	return ns == srv.Namespace && ref.Name == srv.Name && ref.Kind == "Server" &&
		(ref.Group == "" || ref.Group == policyv1.GroupName)
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

// authorization translates one AuthorizationPolicy. The API's networks
// are plain CIDRs, so a network with exceptions becomes the CIDRs that
// cover it without them.
func authorization(ap *policyv1.AuthorizationPolicy) (*apiv1.Authorization, error) {
	a := &apiv1.Authorization{
		Name:            ap.Name,
		Unauthenticated: ap.Spec.Unauthenticated,
		Identities:      slices.Clone(ap.Spec.Identities),
		Namespaces:      slices.Clone(ap.Spec.Namespaces),
	}
	for i, n := range ap.Spec.Networks {
		cidrs, err := subtract(n)
		if err != nil {
			return nil, fmt.Errorf("networks[%d]: %w", i, err)
		}
		a.Networks = append(a.Networks, cidrs...)
	}
	return a, nil
}
