package model

import "strings"

// kindAliases maps what a user types (kubectl's names and short names) to
// Resource's Kind: the one table every command reads.
var kindAliases = map[string]string{
	"deploy": "deployments", "deployment": "deployments", "deployments": "deployments",
	"po": "pods", "pod": "pods", "pods": "pods",
	"ns": "namespaces", "namespace": "namespaces", "namespaces": "namespaces",
	"svc": "services", "service": "services", "services": "services",
	"sts": "statefulsets", "statefulset": "statefulsets", "statefulsets": "statefulsets",
	"ds": "daemonsets", "daemonset": "daemonsets", "daemonsets": "daemonsets",
	"job": "jobs", "jobs": "jobs",
	"rs": "replicasets", "replicaset": "replicasets", "replicasets": "replicasets",
	// Local mode's processes (trellis demo, trellis run).
	"wl": "workloads", "workload": "workloads", "workloads": "workloads",
}

// KindOf resolves a typed kind (any case) to Resource's Kind.
func KindOf(s string) (string, bool) {
	k, ok := kindAliases[strings.ToLower(s)]
	return k, ok
}
