package install

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// Kind is what Trellis knows about a kind it installs: where it lives in
// the API and when it is applied (low first) and deleted (high first).
type Kind struct {
	APIVersion string
	Kind       string
	Resource   string
	Namespaced bool
	Order      int
}

// GVR is the kind's group, version and resource.
func (k Kind) GVR() schema.GroupVersionResource {
	gv, _ := schema.ParseGroupVersion(k.APIVersion) // constants below, tested
	return gv.WithResource(k.Resource)
}

// Kinds lists every kind the chart renders, in apply order. A template
// producing another kind is an error, so this table (which uninstall
// searches) can never miss something install made.
var Kinds = []Kind{
	{"apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", false, 0},
	{"v1", "Namespace", "namespaces", false, 1},
	{"v1", "ServiceAccount", "serviceaccounts", true, 2},
	{"v1", "Secret", "secrets", true, 3},
	{"v1", "ConfigMap", "configmaps", true, 4},
	{"rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", false, 5},
	{"rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", false, 6},
	{"rbac.authorization.k8s.io/v1", "Role", "roles", true, 7},
	{"rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", true, 8},
	{"v1", "Service", "services", true, 9},
	{"apps/v1", "Deployment", "deployments", true, 10},
	// The CNI installer (--cni) before the webhook, so the plugin is on
	// its way before pods are injected for it.
	{"apps/v1", "DaemonSet", "daemonsets", true, 11},
	{"policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", true, 12},
	// The API server's own check of namespaces' default inbound policy.
	{"admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", false, 13},
	{"admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding", "validatingadmissionpolicybindings", false, 14},
	// Last: the injector is called only once the controller can exist.
	{"admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "mutatingwebhookconfigurations", false, 15},
	// The tap API (tap.trellis.io), once the controller serves it.
	{"apiregistration.k8s.io/v1", "APIService", "apiservices", false, 16},
}

// KindOf returns the entry of Kinds for apiVersion and kind.
func KindOf(apiVersion, kind string) (Kind, bool) {
	for _, k := range Kinds {
		if k.APIVersion == apiVersion && k.Kind == kind {
			return k, true
		}
	}
	return Kind{}, false
}

// Object is one rendered manifest: its identity, its YAML as the template
// wrote it, and its parsed content.
type Object struct {
	Kind      Kind
	Name      string
	Namespace string
	Source    string // template file, for messages
	YAML      []byte
	Content   map[string]any
}

// Ref is "Kind namespace/name" or "Kind name".
func (o Object) Ref() string {
	if o.Namespace == "" {
		return o.Kind.Kind + " " + o.Name
	}
	return o.Kind.Kind + " " + o.Namespace + "/" + o.Name
}

// maxManifestBytes bounds what ParseDocuments accepts: a rendered chart is
// tens of kilobytes.
const maxManifestBytes = 8 << 20

// ParseDocuments splits a multi-document YAML stream (as Helm and the
// chart write it) and parses each non-empty document into an Object of a
// known kind with apiVersion, kind, metadata.name, and a namespace exactly
// when the kind is namespaced. source names the input in errors.
func ParseDocuments(data []byte, source string) ([]Object, error) {
	if len(data) > maxManifestBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", source, len(data), maxManifestBytes)
	}
	var out []Object
	for i, doc := range docSeparator.Split(string(data), -1) {
		doc = strings.TrimSpace(doc)
		if onlyComments(doc) {
			continue
		}
		var content map[string]any
		if err := yaml.Unmarshal([]byte(doc), &content); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i+1, err)
		}
		if content == nil {
			continue
		}
		o, err := objectOf(content)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i+1, err)
		}
		o.Source = source
		o.YAML = []byte(doc + "\n")
		out = append(out, o)
	}
	return out, nil
}

func onlyComments(doc string) bool {
	for _, line := range strings.Split(doc, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

func objectOf(c map[string]any) (Object, error) {
	apiVersion, _ := c["apiVersion"].(string)
	kind, _ := c["kind"].(string)
	if apiVersion == "" || kind == "" {
		return Object{}, errors.New("object without apiVersion or kind")
	}
	k, ok := KindOf(apiVersion, kind)
	if !ok {
		return Object{}, fmt.Errorf("%s %s is not a kind Trellis installs (add it to install.Kinds so uninstall finds it)", apiVersion, kind)
	}
	meta, _ := c["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	ns, _ := meta["namespace"].(string)
	o := Object{Kind: k, Name: name, Namespace: ns, Content: c}
	switch {
	case name == "":
		return o, fmt.Errorf("%s without metadata.name", kind)
	case k.Namespaced && ns == "":
		return o, fmt.Errorf("%s without metadata.namespace", o.Ref())
	case !k.Namespaced && ns != "":
		return o, fmt.Errorf("%s is cluster-scoped but has metadata.namespace %q", o.Ref(), ns)
	}
	// Apply-friendly: nothing the server owns.
	if _, ok := c["status"]; ok {
		return o, fmt.Errorf("%s has a status", o.Ref())
	}
	for _, f := range []string{"creationTimestamp", "resourceVersion", "uid", "generation", "managedFields"} {
		if _, ok := meta[f]; ok {
			return o, fmt.Errorf("%s has metadata.%s", o.Ref(), f)
		}
	}
	labels, _ := meta["labels"].(map[string]any)
	if labels[LabelPartOf] != LabelValue || labels[LabelManagedBy] != LabelValue {
		return o, fmt.Errorf("%s lacks the labels %s", o.Ref(), Selector)
	}
	return o, nil
}

// Manifest is an ordered set of objects.
type Manifest struct {
	Header  string // comment lines printed first
	Objects []Object
}

// sortObjects puts objects in apply order, then by namespace and name, so
// output is stable.
func sortObjects(objs []Object) {
	slices.SortStableFunc(objs, func(a, b Object) int {
		return cmp.Or(cmp.Compare(a.Kind.Order, b.Kind.Order), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

// checkUnique refuses two objects with the same identity: apply would
// silently keep only the last.
func checkUnique(objs []Object) error {
	seen := map[string]bool{}
	for _, o := range objs {
		if seen[o.Ref()] {
			return fmt.Errorf("%s rendered twice", o.Ref())
		}
		seen[o.Ref()] = true
	}
	return nil
}

// YAML returns the manifest as one multi-document stream for
// `kubectl apply --server-side -f -`.
func (m *Manifest) YAML() []byte {
	var buf bytes.Buffer
	buf.WriteString(m.Header)
	for _, o := range m.Objects {
		buf.WriteString("---\n")
		buf.Write(o.YAML)
	}
	return buf.Bytes()
}

// Counts returns the number of objects of each kind, in apply order.
func (m *Manifest) Counts() []KindCount {
	var out []KindCount
	for _, k := range Kinds {
		n := 0
		for _, o := range m.Objects {
			if o.Kind == k {
				n++
			}
		}
		if n > 0 {
			out = append(out, KindCount{k.Kind, n})
		}
	}
	return out
}

// KindCount is a number of objects of one kind.
type KindCount struct {
	Kind  string
	Count int
}
