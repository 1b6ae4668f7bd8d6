package prom

import (
	"fmt"
	"strings"

	pmodel "github.com/prometheus/common/model"

	"github.com/trellis-mesh/trellis/viz/model"
)

// workloadKinds maps kubectl's plural to the workload_kind label value.
var workloadKinds = map[string]string{
	"deployments":  "deployment",
	"statefulsets": "statefulset",
	"daemonsets":   "daemonset",
	"jobs":         "job",
	"replicasets":  "replicaset",
}

// Kinds the Prometheus source answers for (services: by destination).
var Kinds = []string{"deployments", "statefulsets", "daemonsets", "jobs", "replicasets", "pods", "namespaces", "services"}

// keying is how rows of one kind are selected and keyed.
type keying struct {
	by  []string // grouping labels
	sel []string // matchers of the kind and the resource
}

// keyingOf returns the grouping and matchers of r on the proxy's own
// series. Services are not a property of the proxy that serves them but of
// the destination its clients name (dst_service): they have no keying.
func keyingOf(r model.Resource) (keying, error) {
	k := keying{sel: []string{eq("job", ProxyJob)}}
	if r.Namespace != "" {
		k.sel = append(k.sel, eq(LabelNamespace, r.Namespace))
	}
	switch r.Kind {
	case "pods":
		k.by = []string{LabelNamespace, LabelPod}
		if r.Name != "" {
			k.sel = append(k.sel, eq(LabelPod, r.Name))
		}
	case "namespaces":
		k.by = []string{LabelNamespace}
		if r.Name != "" {
			k.sel = append(k.sel, eq(LabelNamespace, r.Name))
		}
	default:
		wk, ok := workloadKinds[r.Kind]
		if !ok {
			return k, fmt.Errorf("resource kind %q: Prometheus answers for %s", r.Kind, strings.Join(Kinds, ", "))
		}
		k.by = []string{LabelNamespace, LabelWorkloadKind, LabelWorkload}
		k.sel = append(k.sel, eq(LabelWorkloadKind, wk))
		if r.Name != "" {
			k.sel = append(k.sel, eq(LabelWorkload, r.Name))
		}
	}
	return k, nil
}

// resourceOf reads the row's resource back from its labels.
func resourceOf(kind string, m pmodel.Metric) model.Resource {
	ns := string(m[LabelNamespace])
	switch kind {
	case "pods":
		return model.Resource{Kind: kind, Namespace: ns, Name: string(m[LabelPod])}
	case "namespaces":
		return model.Resource{Kind: kind, Name: ns}
	}
	return model.Resource{Kind: kind, Namespace: ns, Name: string(m[LabelWorkload])}
}

// workloadOf is the owning workload of a series as a Resource (pods
// without an owner are their own workload).
func workloadOf(m pmodel.Metric) model.Resource {
	k := string(m[LabelWorkloadKind])
	name := string(m[LabelWorkload])
	if k == "" || name == "" {
		return model.Resource{Kind: "pods", Namespace: string(m[LabelNamespace]), Name: string(m[LabelPod])}
	}
	return model.Resource{Kind: k + "s", Namespace: string(m[LabelNamespace]), Name: name}
}

// ServiceOf names the Kubernetes Service an authority (dst_service) is
// for: "books.demo.svc.cluster.local:80", "books.demo:80" and "books:80"
// (in the caller's namespace clientNS) are all books in their namespace.
// An IP or an unqualified name keeps its host as the name.
func ServiceOf(authority, clientNS string) model.Resource {
	host := authority
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	parts := strings.Split(host, ".")
	r := model.Resource{Kind: "services", Namespace: clientNS, Name: parts[0]}
	if len(parts) >= 2 && !isIPv4(parts) {
		r.Namespace = parts[1]
	}
	if isIPv4(parts) || strings.HasPrefix(host, "[") {
		r.Name = host
	}
	return r
}

func isIPv4(parts []string) bool {
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}
