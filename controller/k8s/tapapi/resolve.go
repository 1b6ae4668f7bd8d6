package tapapi

import (
	"context"
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/controller/tapfan"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Target is what a tap names: a whole namespace (Resource "namespaces",
// Name the namespace) or one object of Resource.
type Target struct {
	Namespace string
	// Resource is a kubectl plural (pods, deployments, ...) or "namespaces".
	Resource string
	Name     string
}

func (t Target) String() string {
	if t.Resource == "namespaces" {
		return "namespace " + t.Namespace
	}
	return t.Resource + "/" + t.Name + " in namespace " + t.Namespace
}

// Resources a tap may name, beside a whole namespace.
var tapResources = []string{"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs"}

// DefaultTapPort is the proxy's tap port when its container names none.
const DefaultTapPort = 4190

// TapPortName is the proxy container's port the injector declares.
const TapPortName = "trellis-tap"

// PodTap is one meshed pod to tap.
type PodTap = tapfan.Target

// errNotFound is a target that does not exist (404).
type errNotFound struct{ msg string }

func (e errNotFound) Error() string { return e.msg }

// Resolve lists the running, meshed pods of t. A deployment's pods are
// those of the ReplicaSets it owns; other workloads own their pods.
func Resolve(ctx context.Context, c kubernetes.Interface, t Target, trustDomain string) ([]PodTap, error) {
	pods, err := targetPods(ctx, c, t)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, errNotFound{fmt.Sprintf("%s not found", t)}
		}
		return nil, err
	}
	var out []PodTap
	for i := range pods {
		if pt, ok := podTap(&pods[i], trustDomain); ok {
			out = append(out, pt)
		}
	}
	return out, nil
}

func targetPods(ctx context.Context, c kubernetes.Interface, t Target) ([]corev1.Pod, error) {
	ns := t.Namespace
	list := func(sel *metav1.LabelSelector) ([]corev1.Pod, error) {
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("%s: selector: %w", t, err)
		}
		if s.Empty() {
			s = labels.Everything()
		}
		pl, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: s.String()})
		if err != nil {
			return nil, err
		}
		return pl.Items, nil
	}
	get := metav1.GetOptions{}
	switch t.Resource {
	case "namespaces":
		if _, err := c.CoreV1().Namespaces().Get(ctx, ns, get); err != nil {
			return nil, err
		}
		return list(nil)
	case "pods":
		p, err := c.CoreV1().Pods(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		return []corev1.Pod{*p}, nil
	case "deployments":
		d, err := c.AppsV1().Deployments(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		rsl, err := c.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		owners := map[types.UID]bool{}
		for _, rs := range rsl.Items {
			if ownedBy(rs.OwnerReferences, d.UID) {
				owners[rs.UID] = true
			}
		}
		pods, err := list(d.Spec.Selector)
		return filterOwned(pods, owners), err
	}
	var uid types.UID
	var sel *metav1.LabelSelector
	switch t.Resource {
	case "statefulsets":
		o, err := c.AppsV1().StatefulSets(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		uid, sel = o.UID, o.Spec.Selector
	case "daemonsets":
		o, err := c.AppsV1().DaemonSets(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		uid, sel = o.UID, o.Spec.Selector
	case "replicasets":
		o, err := c.AppsV1().ReplicaSets(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		uid, sel = o.UID, o.Spec.Selector
	case "jobs":
		o, err := c.BatchV1().Jobs(ns).Get(ctx, t.Name, get)
		if err != nil {
			return nil, err
		}
		uid, sel = o.UID, o.Spec.Selector
	default:
		return nil, errNotFound{fmt.Sprintf("resource %q cannot be tapped (want one of %v, or a whole namespace)", t.Resource, tapResources)}
	}
	pods, err := list(sel)
	return filterOwned(pods, map[types.UID]bool{uid: true}), err
}

func ownedBy(refs []metav1.OwnerReference, uid types.UID) bool {
	for _, r := range refs {
		if r.UID == uid && r.Controller != nil && *r.Controller {
			return true
		}
	}
	return false
}

func filterOwned(pods []corev1.Pod, owners map[types.UID]bool) []corev1.Pod {
	out := pods[:0]
	for _, p := range pods {
		for uid := range owners {
			if ownedBy(p.OwnerReferences, uid) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// podTap says where a running pod's proxy serves tap, and who it must be.
func podTap(p *corev1.Pod, trustDomain string) (PodTap, bool) {
	if p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" || p.DeletionTimestamp != nil {
		return PodTap{}, false
	}
	port, meshed := 0, false
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name != k8slabels.ProxyContainerName {
			continue
		}
		meshed, port = true, DefaultTapPort
		for _, cp := range c.Ports {
			if cp.Name == TapPortName {
				port = int(cp.ContainerPort)
			}
		}
	}
	if !meshed {
		return PodTap{}, false
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	id, err := identity.New(trustDomain, p.Namespace, sa)
	if err != nil {
		return PodTap{}, false
	}
	return PodTap{Namespace: p.Namespace, Name: p.Name, Addr: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)), Identity: id}, true
}
