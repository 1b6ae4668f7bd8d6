package check

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ControllerAdminPort is the controller's admin port on Kubernetes
// (/metrics, /ready, /debug/...; charts/trellis).
const ControllerAdminPort = 9996

// ControllerPods returns the running pods of the controller Deployment
// (every replica), by name.
func ControllerPods(ctx context.Context, e *Env) ([]corev1.Pod, error) {
	d, err := getController(ctx, e)
	if err != nil {
		return nil, fmt.Errorf("get deployment %s/%s: %w", e.ns(), ControllerName, err)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("deployment %s/%s selector: %w", e.ns(), ControllerName, err)
	}
	list, err := e.Kube.CoreV1().Pods(e.ns()).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s/%s: %w", e.ns(), ControllerName, err)
	}
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no running pod of deployment %s/%s (kubectl -n %s get pods)", e.ns(), ControllerName, e.ns())
	}
	slices.SortFunc(out, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
