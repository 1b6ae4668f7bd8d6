package tapcmd

import (
	"fmt"
	"strings"

	"github.com/trellis-mesh/trellis/viz/model"
)

// kinds maps what kubectl accepts (singular, plural, short) to the plural.
var kinds = map[string]string{
	"po": "pods", "pod": "pods", "pods": "pods",
	"deploy": "deployments", "deployment": "deployments", "deployments": "deployments",
	"sts": "statefulsets", "statefulset": "statefulsets", "statefulsets": "statefulsets",
	"ds": "daemonsets", "daemonset": "daemonsets", "daemonsets": "daemonsets",
	"rs": "replicasets", "replicaset": "replicasets", "replicasets": "replicasets",
	"job": "jobs", "jobs": "jobs",
	"ns": "namespaces", "namespace": "namespaces", "namespaces": "namespaces",
	// Local mode's processes (trellis demo, trellis run).
	"wl": "workloads", "workload": "workloads", "workloads": "workloads",
}

// LocalTarget is ParseTarget for local mode: every workload kind names a
// workload of the store (deploy/web is the demo's workload web), and no
// namespace means any.
func LocalTarget(args []string, namespace string) (model.Resource, error) {
	if len(args) == 0 {
		return model.Resource{Namespace: namespace}, nil
	}
	r, err := ParseTarget(args, namespace)
	if err != nil {
		return r, err
	}
	if r.Kind != "namespaces" {
		r.Kind, r.Namespace = "workloads", namespace
	}
	return r, nil
}

// ParseTarget reads `RESOURCE/NAME`, `RESOURCE NAME` or `ns/NAME` (a whole
// namespace), kubectl-style; namespace is -n's.
func ParseTarget(args []string, namespace string) (model.Resource, error) {
	var kind, name string
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		kind, name, _ = strings.Cut(args[0], "/")
	case len(args) == 1:
		kind = args[0]
	case len(args) == 2 && !strings.Contains(args[0], "/"):
		kind, name = args[0], args[1]
	default:
		return model.Resource{}, fmt.Errorf("want RESOURCE/NAME or RESOURCE NAME (e.g. deploy/web, pod web-1, ns/demo), got %q", strings.Join(args, " "))
	}
	plural, ok := kinds[strings.ToLower(kind)]
	if !ok {
		return model.Resource{}, fmt.Errorf("%q cannot be tapped: want one of pods, deployments, statefulsets, daemonsets, replicasets, jobs or namespaces (kubectl's short names work: deploy, po, sts, ds, rs, ns)", kind)
	}
	if plural == "namespaces" {
		switch {
		case name == "" && namespace == "":
			return model.Resource{}, fmt.Errorf("which namespace? ns/NAME or -n NAME")
		case name == "":
			name = namespace
		case namespace != "" && namespace != name:
			return model.Resource{}, fmt.Errorf("ns/%s with -n %s: name one namespace", name, namespace)
		}
		return model.Resource{Kind: plural, Namespace: name, Name: name}, nil
	}
	if name == "" || strings.Contains(name, "/") {
		return model.Resource{}, fmt.Errorf("%s: a name is needed (%s/NAME)", kind, kind)
	}
	if plural == "workloads" {
		return model.Resource{Kind: plural, Namespace: namespace, Name: name}, nil
	}
	if namespace == "" {
		namespace = "default"
	}
	return model.Resource{Kind: plural, Namespace: namespace, Name: name}, nil
}
