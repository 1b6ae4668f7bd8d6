package tapcmd

import (
	"fmt"
	"strings"

	"github.com/trellis-mesh/trellis/viz/model"
)

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
	plural, ok := model.KindOf(kind)
	if !ok || plural == "services" { // a Service has no proxies of its own to tap
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
