package topcmd

import (
	"fmt"
	"strings"

	"github.com/trellis-mesh/trellis/viz/model"
)

// kinds maps what kubectl accepts (singular, plural, short) to the plural
// the tap API takes.
var kinds = map[string]string{
	"po": "pods", "pod": "pods", "pods": "pods",
	"deploy": "deployments", "deployment": "deployments", "deployments": "deployments",
	"sts": "statefulsets", "statefulset": "statefulsets", "statefulsets": "statefulsets",
	"ds": "daemonsets", "daemonset": "daemonsets", "daemonsets": "daemonsets",
	"rs": "replicasets", "replicaset": "replicasets", "replicasets": "replicasets",
	"job": "jobs", "jobs": "jobs",
	"ns": "namespaces", "namespace": "namespaces", "namespaces": "namespaces",
}

// ParseResource reads KIND/NAME (deploy/web) or KIND NAME, kubectl-style;
// "ns/NAME" or "namespace" alone taps a whole namespace.
func ParseResource(args []string, namespace string) (model.Resource, error) {
	kind, name := args[0], ""
	if k, n, ok := strings.Cut(args[0], "/"); ok {
		if len(args) > 1 {
			return model.Resource{}, fmt.Errorf("%q already names the object; unexpected %q", args[0], args[1])
		}
		kind, name = k, n
	} else if len(args) > 1 {
		name = args[1]
	}
	plural, ok := kinds[strings.ToLower(kind)]
	if !ok {
		return model.Resource{}, fmt.Errorf("resource kind %q: want one of pods, deployments, statefulsets, daemonsets, replicasets, jobs, namespaces (kubectl's short names work: deploy/web)", kind)
	}
	if plural == "namespaces" {
		if name == "" {
			name = namespace
		}
		return model.Resource{Kind: plural, Namespace: name, Name: name}, nil
	}
	if name == "" {
		return model.Resource{}, fmt.Errorf("%s: which one? (%s/NAME)", plural, kind)
	}
	return model.Resource{Kind: plural, Namespace: namespace, Name: name}, nil
}
