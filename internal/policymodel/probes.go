package policymodel

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// maxProbePaths bounds the probes route: a pod has at most three probes
// per container, but its spec is user input.
const maxProbePaths = 32

// ProbePaths returns the paths of the pods' HTTP kubelet probes (liveness,
// readiness, startup) on port, sorted and without their query: what the
// default answer lets in unauthenticated. The proxy matches paths exactly.
func ProbePaths(pods []*corev1.Pod, port uint32) []string {
	var out []string
	for _, pod := range pods {
		for _, ct := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
			for _, pr := range []*corev1.Probe{ct.LivenessProbe, ct.ReadinessProbe, ct.StartupProbe} {
				if pr == nil || pr.HTTPGet == nil || !probePort(pr.HTTPGet.Port, ct, port) {
					continue
				}
				path, _, _ := strings.Cut(pr.HTTPGet.Path, "?")
				if path == "" || path[0] != '/' {
					path = "/" + path
				}
				if !slices.Contains(out, path) && len(out) < maxProbePaths {
					out = append(out, path)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

// probePort reports whether a probe's port is port: a number, or the name
// of a port of the probe's own container.
func probePort(p intstr.IntOrString, ct corev1.Container, port uint32) bool {
	if p.Type == intstr.Int {
		return p.IntVal > 0 && uint32(p.IntVal) == port
	}
	for _, cp := range ct.Ports {
		if cp.Name == p.StrVal && cp.ContainerPort > 0 && uint32(cp.ContainerPort) == port {
			return true
		}
	}
	return false
}
