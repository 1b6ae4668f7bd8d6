package policymodel

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

// Condition is one status condition an object should carry, without the
// transition time and generation (the status writer sets those).
type Condition struct {
	OK      bool
	Reason  string
	Message string
}

// Verdict is what the controller says of one object: Accepted, and for
// kinds with a targetRef, ResolvedRefs.
type Verdict struct {
	Accepted     Condition
	ResolvedRefs *Condition
}

// ReasonRefNotPermitted: a targetRef names an object the policy may not
// target (another namespace).
const ReasonRefNotPermitted = "RefNotPermitted"

// The Accepted message says what the controller does with the object,
// which is all it can know: whether a proxy enforces it is the proxy's
// (trellis_inbound_authz_* metrics).
var (
	acceptedServer = Condition{OK: true, Reason: policyv1.ReasonAccepted,
		Message: "translated into the inbound policy sent to the proxies of the pods it selects"}
	acceptedPolicy = Condition{OK: true, Reason: policyv1.ReasonAccepted,
		Message: "translated into the inbound policy sent to the proxies of its target's pods"}
	resolved = Condition{OK: true, Reason: policyv1.ReasonResolvedRefs, Message: "targetRef resolves"}
)

// AcceptServer: a Server is accepted unless an older Server already
// selects one of the same pods and ports (then the older one applies
// there, and this one is marked Conflict naming it). pods are the
// namespace's pods.
func AcceptServer(srv *policyv1.Server, servers []*policyv1.Server, pods []*corev1.Pod) Verdict {
	for _, pod := range pods {
		if pod.Namespace != srv.Namespace || !Selects(srv, pod) {
			continue
		}
		for _, port := range ServerPorts(srv, pod) {
			if w := ServerFor(pod, port, servers); w != nil && w.Name != srv.Name {
				return Verdict{Accepted: Condition{Reason: policyv1.ReasonConflict,
					Message: fmt.Sprintf("pod %s port %d is already selected by the older Server %q, which applies there", pod.Name, port, w.Name)}}
			}
		}
	}
	return Verdict{Accepted: acceptedServer}
}

// AcceptAuthorizationPolicy checks what the schema cannot: the target
// exists (a route's parent is a Server), and every entry translates.
func AcceptAuthorizationPolicy(ap *policyv1.AuthorizationPolicy, objs Objects, trustDomain string) Verdict {
	refs := resolveTarget(ap, objs)
	if !refs.OK {
		return Verdict{Accepted: refs, ResolvedRefs: &refs}
	}
	if _, err := Authorization(ap, trustDomain); err != nil {
		return Verdict{Accepted: Condition{Reason: policyv1.ReasonInvalid, Message: err.Error()}, ResolvedRefs: &refs}
	}
	return Verdict{Accepted: acceptedPolicy, ResolvedRefs: &refs}
}

func resolveTarget(ap *policyv1.AuthorizationPolicy, objs Objects) Condition {
	ref, ns := ap.Spec.TargetRef, ap.Namespace
	notFound := func(format string, args ...any) Condition {
		return Condition{Reason: policyv1.ReasonTargetNotFound, Message: fmt.Sprintf(format, args...)}
	}
	switch ref.Kind {
	case policyv1.KindServer:
		if serverNamed(objs.Servers, ns, ref.Name) == nil {
			return notFound("targetRef names Server %q, which does not exist in namespace %s", ref.Name, ns)
		}
	case policyv1.KindNamespace:
		if ref.Name != ns {
			return Condition{Reason: ReasonRefNotPermitted,
				Message: fmt.Sprintf("targetRef names Namespace %q: a policy applies only to its own namespace, %s", ref.Name, ns)}
		}
	case policyv1.KindHTTPRoute, policyv1.KindGRPCRoute:
		refs, ok := routeParents(objs, ns, ref.Kind, ref.Name)
		if !ok {
			return notFound("targetRef names %s %q, which does not exist in namespace %s", ref.Kind, ref.Name, ns)
		}
		if !hasExistingServer(objs.Servers, ns, refs) {
			return notFound("targetRef names %s %q, whose parentRefs name no existing Server (group policy.trellis.io, kind Server) in namespace %s", ref.Kind, ref.Name, ns)
		}
	default:
		return Condition{Reason: policyv1.ReasonInvalid, Message: fmt.Sprintf("targetRef kind %q is not Server, Namespace, HTTPRoute or GRPCRoute", ref.Kind)}
	}
	return resolved
}

func serverNamed(servers []*policyv1.Server, ns, name string) *policyv1.Server {
	for _, s := range servers {
		if s.Namespace == ns && s.Name == name {
			return s
		}
	}
	return nil
}

// AcceptRateLimit checks the target exists, no older RateLimit already
// limits it, and the limits translate (on a Server: every override's
// clients; on a Service: only a rate, acceptServiceRateLimit).
// serviceExists says whether a Service exists (nil: unknown, taken as
// existing).
func AcceptRateLimit(rl *policyv1.RateLimit, servers []*policyv1.Server, limits []*policyv1.RateLimit, trustDomain string, serviceExists func(ns, name string) bool) Verdict {
	if rl.Spec.TargetRef.Kind == policyv1.KindService {
		return acceptServiceRateLimit(rl, limits, serviceExists)
	}
	srv := serverNamed(servers, rl.Namespace, rl.Spec.TargetRef.Name)
	if srv == nil || !Targets(rl.Namespace, rl.Spec.TargetRef, srv) {
		c := Condition{Reason: policyv1.ReasonTargetNotFound,
			Message: fmt.Sprintf("targetRef names Server %q, which does not exist in namespace %s", rl.Spec.TargetRef.Name, rl.Namespace)}
		return Verdict{Accepted: c, ResolvedRefs: &c}
	}
	if first := RateLimitFor(srv, limits); first != nil && first.Name != rl.Name {
		r := resolved
		return Verdict{ResolvedRefs: &r, Accepted: Condition{Reason: policyv1.ReasonConflict,
			Message: fmt.Sprintf("Server %q is already limited by the older RateLimit %q", srv.Name, first.Name)}}
	}
	r := resolved
	if _, err := Limits(rl, trustDomain); err != nil {
		return Verdict{ResolvedRefs: &r, Accepted: Condition{Reason: policyv1.ReasonInvalid, Message: err.Error()}}
	}
	return Verdict{ResolvedRefs: &r, Accepted: Condition{OK: true, Reason: policyv1.ReasonAccepted,
		Message: "translated into the limits sent to the proxies of its Server's pods"}}
}
