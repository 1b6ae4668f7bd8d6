// Package policymodel translates the policy.trellis.io objects of a
// namespace (Server, AuthorizationPolicy, RateLimit), the Gateway API
// routes whose parent is a Server (HTTPRoute, GRPCRoute) and the pods a
// request is about into the Policy API's answer for one port
// (apiv1.ServerPolicy). It is pure: objects in, answer out, no informers.
// The Kubernetes controller (controller/k8s/policy), local mode's store
// and `trellis policy explain/suggest` all call it, so they agree.
//
// Semantics (docs/policy.md): a port no Server selects gets the default
// answer (source "default", access UNSPECIFIED: the proxy applies its
// configured default), plus a "probes" route letting the kubelet's HTTP
// probes of that port in. A port a Server selects allows the clients of
// the AuthorizationPolicies that target the Server or its namespace, and
// on each route (HTTPRoute/GRPCRoute whose parent is the Server) those
// that target the route; any other call gets the Server's accessPolicy
// (default deny).
package policymodel

import (
	"cmp"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/policymodel/answer"
)

// Sources of an answer (ServerPolicy.source), and names.
const (
	SourceServer  = answer.SourceServer
	SourceDefault = answer.SourceDefault
	DefaultName   = answer.DefaultName
	ProbesRoute   = answer.ProbesRoute
)

// MaxAnswerBytes bounds the encoded size of one answer, well under gRPC's
// 4 MiB message limit: an answer over it could never reach the proxy,
// which would then keep its default forever. The CRDs bound each object;
// this bounds how many a Server gathers (see Translate).
const MaxAnswerBytes = 1 << 20

// Objects are the policy objects of one namespace. Objects of another
// namespace are ignored (no cross-namespace reference exists).
type Objects struct {
	Servers    []*policyv1.Server
	Authz      []*policyv1.AuthorizationPolicy
	RateLimits []*policyv1.RateLimit
	HTTPRoutes []*gwv1.HTTPRoute
	GRPCRoutes []*gwv1.GRPCRoute
}

// Input is what one answer depends on.
type Input struct {
	// Pods the request is about: the one pod the proxy named, or every
	// running pod of its identity (one namespace, one service account)
	// when it named none. With several, the oldest selecting Server wins.
	Pods []*corev1.Pod
	Port uint32
	// TrustDomain turns serviceAccounts into SPIFFE IDs; when empty, an
	// AuthorizationPolicy's serviceAccounts allow nobody.
	TrustDomain string
	Objects
}

// Translate returns the answer for in.Port of in.Pods. It never fails: an
// object the schema should have refused allows nobody (its status says
// why, see the Accept functions), so a broken object can only narrow
// access. The answer is at most MaxAnswerBytes: past it, routes and then
// authorizations are left out from the last by name (fail closed).
func Translate(in Input) *apiv1.ServerPolicy {
	var srv *policyv1.Server
	for _, p := range in.Pods {
		if s := ServerFor(p, in.Port, in.Servers); s != nil && (srv == nil || older(s, srv)) {
			srv = s
		}
	}
	if srv == nil {
		return Default(apiv1.ProtocolHint_UNKNOWN, ProbePaths(in.Pods, in.Port))
	}
	p := serverPolicy(srv, in)
	bound(p)
	return p
}

// Default is the answer of a port no Server selects (answer.Default).
func Default(protocol apiv1.ProtocolHint_Protocol, probePaths []string) *apiv1.ServerPolicy {
	return answer.Default(protocol, probePaths)
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

func byName[T metav1.Object](objs []T) []T {
	return slices.SortedFunc(slices.Values(objs), func(a, b T) int { return cmp.Compare(a.GetName(), b.GetName()) })
}
