package vizcmd

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
)

// PodCounter counts the running pods (meshed or not) of each resource of
// a query through the Kubernetes API, as the scrape relabelling names
// them: a ReplicaSet's pods with a pod-template-hash belong to its
// Deployment.
func PodCounter(cs kubernetes.Interface) prom.PodCounter {
	return func(ctx context.Context, q model.Query) (map[model.Resource]int, error) {
		pods, err := cs.CoreV1().Pods(q.Resource.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("list pods: %w", err)
		}
		out := map[model.Resource]int{}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			r, ok := resourceOfPod(p, q.Resource.Kind)
			if ok && (q.Resource.Name == "" || r.Name == q.Resource.Name) {
				out[r]++
			}
		}
		return out, nil
	}
}

// resourceOfPod is the pod's resource of kind (false: the pod is not part
// of one).
func resourceOfPod(p *corev1.Pod, kind string) (model.Resource, bool) {
	switch kind {
	case "pods":
		return model.Resource{Kind: kind, Namespace: p.Namespace, Name: p.Name}, true
	case "namespaces":
		return model.Resource{Kind: kind, Name: p.Namespace}, true
	}
	owner := metav1.GetControllerOf(p)
	if owner == nil {
		return model.Resource{}, false
	}
	ownerKind, name := strings.ToLower(owner.Kind)+"s", owner.Name
	if hash := p.Labels["pod-template-hash"]; ownerKind == "replicasets" && hash != "" && strings.HasSuffix(name, "-"+hash) {
		ownerKind, name = "deployments", strings.TrimSuffix(name, "-"+hash)
	}
	if ownerKind != kind {
		return model.Resource{}, false
	}
	return model.Resource{Kind: kind, Namespace: p.Namespace, Name: name}, true
}
