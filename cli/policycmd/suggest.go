package policycmd

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

// PolicyAPIVersion is the apiVersion of the objects suggest writes.
var PolicyAPIVersion = policyv1.SchemeGroupVersion.String()

// Kinds of the objects suggest writes.
const (
	KindServer = "Server"
	KindAuthz  = "AuthorizationPolicy"
)

// Access policies a suggested Server carries.
const (
	AccessDeny  = "deny"
	AccessAudit = "audit"
)

// Pod is one meshed pod (or local-mode workload) and what its proxy saw.
type Pod struct {
	Name           string
	Namespace      string
	ServiceAccount string
	Labels         map[string]string
	Annotations    map[string]string
	// Ports are the app's ports (container ports; a local workload's
	// endpoint target ports): the port of a sample without a port label
	// when there is exactly one.
	Ports   []uint32
	Samples []Sample
}

// Object is a Kubernetes-shaped object, as kubectl apply and the local
// store file's policies take it.
type Object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   Meta   `json:"metadata"`
	Spec       any    `json:"spec"`
}

// Meta is an object's name and namespace.
type Meta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// ServerSpec is the spec of a suggested Server.
type ServerSpec struct {
	PodSelector  Selector `json:"podSelector"`
	Port         uint32   `json:"port"`
	AccessPolicy string   `json:"accessPolicy"`
}

// Selector is a podSelector by labels.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels"`
}

// AuthzSpec is the spec of a suggested AuthorizationPolicy.
type AuthzSpec struct {
	TargetRef       TargetRef `json:"targetRef"`
	Identities      []string  `json:"identities,omitempty"`
	Unauthenticated bool      `json:"unauthenticated,omitempty"`
}

// TargetRef names the Server a policy targets.
type TargetRef struct {
	Group string `json:"group"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// Suggestion is what suggest computed: the objects, and what a person
// should know about them (denied callers left out, clients it could not
// name).
type Suggestion struct {
	Objects  []Object `json:"objects"`
	Notes    []string `json:"notes,omitempty"`
	Servers  int      `json:"servers"`
	Policies int      `json:"policies"`
}

// Labels that differ between pods of one workload and so never select it.
var podSpecificLabels = []string{"pod-template-hash", "controller-revision-hash",
	"statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index", "pod-template-generation"}

// serverKey is one workload's port.
type serverKey struct {
	sa   string
	port uint32
}

// clients is who was seen calling one server.
type clients struct {
	ids             map[string]bool
	unauthenticated bool
	denied          map[string]float64
}

// Suggest returns a Server per workload port that saw traffic, with
// accessPolicy deny (audit with audit), and one AuthorizationPolicy each
// allowing exactly the clients seen: their identities, and unauthenticated
// only where calls without mesh TLS were seen. Probe traffic (the probes
// route) is left out; denied calls are not allowed, only noted.
func Suggest(pods []Pod, audit bool) (Suggestion, error) {
	seen := map[serverKey]*clients{}
	var sug Suggestion
	for _, p := range pods {
		for _, s := range p.Samples {
			if s.Route == ProbesRoute || s.Count <= 0 {
				continue
			}
			port, err := portOf(p, s)
			if err != nil {
				return Suggestion{}, err
			}
			k := serverKey{p.ServiceAccount, port}
			c := seen[k]
			if c == nil {
				c = &clients{ids: map[string]bool{}, denied: map[string]float64{}}
				seen[k] = c
			}
			c.add(s)
		}
	}
	keys := slices.SortedFunc(maps.Keys(seen), func(a, b serverKey) int {
		return strings.Compare(fmt.Sprintf("%s/%05d", a.sa, a.port), fmt.Sprintf("%s/%05d", b.sa, b.port))
	})
	access := AccessDeny
	if audit {
		access = AccessAudit
	}
	for _, k := range keys {
		c := seen[k]
		name := fmt.Sprintf("%s-%d", k.sa, k.port)
		sug.Notes = append(sug.Notes, c.notes(name)...)
		if len(c.ids) == 0 && !c.unauthenticated {
			continue // only denied calls: nothing to allow, the default decides
		}
		sel, err := selectorFor(pods, k.sa)
		if err != nil {
			return Suggestion{}, err
		}
		ns := pods[0].Namespace
		sug.Objects = append(sug.Objects,
			Object{APIVersion: PolicyAPIVersion, Kind: KindServer, Metadata: Meta{Name: name, Namespace: ns},
				Spec: ServerSpec{PodSelector: Selector{MatchLabels: sel}, Port: k.port, AccessPolicy: access}},
			Object{APIVersion: PolicyAPIVersion, Kind: KindAuthz, Metadata: Meta{Name: name + "-clients", Namespace: ns},
				Spec: AuthzSpec{TargetRef: TargetRef{Group: "policy.trellis.io", Kind: KindServer, Name: name},
					Identities: slices.Sorted(maps.Keys(c.ids)), Unauthenticated: c.unauthenticated}})
		sug.Servers++
		sug.Policies++
	}
	return sug, nil
}

func (c *clients) add(s Sample) {
	switch {
	case s.Decision == Deny:
		c.denied[clientName(s.ClientID)] += s.Count
	case s.ClientID == OtherClient:
		c.denied[OtherClient] += 0 // noted, cannot be named
	case s.ClientID == "" || !s.TLS:
		c.unauthenticated = true
	default:
		c.ids[s.ClientID] = true
	}
}

func (c *clients) notes(server string) []string {
	var out []string
	for _, id := range slices.Sorted(maps.Keys(c.denied)) {
		if id == OtherClient {
			out = append(out, fmt.Sprintf("%s: some clients were reported as %q (the proxy's bound on distinct identities): they are not named, so not allowed", server, OtherClient))
			continue
		}
		out = append(out, fmt.Sprintf("%s: %.0f calls from %s were denied and are not allowed here; add them if they should be", server, c.denied[id], id))
	}
	return out
}

func clientName(id string) string {
	if id == "" {
		return "unauthenticated clients"
	}
	return id
}

// portOf is a sample's port: its label, else the pod's only port.
func portOf(p Pod, s Sample) (uint32, error) {
	if s.Port != 0 {
		return s.Port, nil
	}
	if len(p.Ports) == 1 {
		return p.Ports[0], nil
	}
	return 0, fmt.Errorf("pod %s/%s: its proxy's metrics carry no port and the pod has %d ports (%v): cannot tell which port server %q is", p.Namespace, p.Name, len(p.Ports), p.Ports, s.Server)
}

// selectorFor returns the labels every pod of a service account shares
// (less the per-pod ones), checked to select no pod of another service
// account: a Server must govern exactly that workload.
func selectorFor(pods []Pod, sa string) (map[string]string, error) {
	var common map[string]string
	for _, p := range pods {
		if p.ServiceAccount != sa {
			continue
		}
		if common == nil {
			common = maps.Clone(p.Labels)
			for _, l := range podSpecificLabels {
				delete(common, l)
			}
			continue
		}
		for k, v := range common {
			if p.Labels[k] != v {
				delete(common, k)
			}
		}
	}
	if len(common) == 0 {
		return nil, fmt.Errorf("service account %s: its pods share no label to select them by; label them (for example app: %s) and run again", sa, sa)
	}
	for _, p := range pods {
		if p.ServiceAccount != sa && matches(common, p.Labels) {
			return nil, fmt.Errorf("service account %s: the labels its pods share (%s) also select pod %s of service account %s; give the workloads distinct labels", sa, labelString(common), p.Name, p.ServiceAccount)
		}
	}
	return common, nil
}

func matches(sel, labels map[string]string) bool {
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func labelString(m map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
