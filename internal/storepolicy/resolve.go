package storepolicy

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// Workload is what the answer needs of a store file's workload: it stands
// for a pod.
type Workload struct {
	Name   string
	Labels map[string]string
}

// Answer is the Policy API's answer for a port of the workloads of one
// identity in namespace ns, computed by internal/policymodel as on
// Kubernetes: the first Server of the file that selects one of them on
// that port, else policymodel's default (source "default", access
// unspecified, so the proxy applies its own --default-inbound-policy; no
// probes route: local workloads have no kubelet probes). trustDomain turns
// serviceAccounts into SPIFFE IDs.
func (p Policies) Answer(ns string, workloads []Workload, port uint32, trustDomain string) *apiv1.ServerPolicy {
	pods := make([]*corev1.Pod, len(workloads))
	for i, w := range workloads {
		pods[i] = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: w.Name, Namespace: ns, Labels: w.Labels}}
	}
	return policymodel.Translate(policymodel.Input{Pods: pods, Port: port, TrustDomain: trustDomain, Objects: p.Objects()})
}

// Objects are the policies as policymodel takes them.
func (p Policies) Objects() policymodel.Objects {
	return policymodel.Objects{Servers: p.Servers, Authz: p.AuthorizationPolicies, RateLimits: p.RateLimits, HTTPRoutes: p.HTTPRoutes, GRPCRoutes: p.GRPCRoutes}
}
