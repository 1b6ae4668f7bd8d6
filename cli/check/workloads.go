package check

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// pullReasons are the kubelet's waiting reasons of a container whose
// image cannot be had.
var pullReasons = []string{"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable"}

// pullProblems names each container of p stuck on its image: the
// container, the image and the kubelet's reason and message.
func pullProblems(p *corev1.Pod) []string {
	var out []string
	for _, st := range slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses) {
		w := st.State.Waiting
		if w == nil || !slices.Contains(pullReasons, w.Reason) {
			continue
		}
		msg := fmt.Sprintf("container %s: image %s: %s", st.Name, imageOf(p, st), w.Reason)
		if m := firstLineOf(w.Message); m != "" {
			msg += " (" + m + ")"
		}
		out = append(out, msg)
	}
	return out
}

// imageOf is the image the spec asks for (the status may hold a resolved
// or empty one while the pull fails).
func imageOf(p *corev1.Pod, st corev1.ContainerStatus) string {
	for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
		if c.Name == st.Name {
			return c.Image
		}
	}
	return st.Image
}

func firstLineOf(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

// MeshedImagesCheck: no meshed pod is stuck pulling an image (its app's or
// the proxy's), named with the image and the kubelet's reason.
var MeshedImagesCheck = Check{
	Group: "data plane", Name: "meshed pods are not stuck pulling an image", Anchor: "meshed-images",
	Run: func(ctx context.Context, e *Env) Outcome {
		pods, err := meshedPods(ctx, e)
		if err != nil {
			return fail("check that you may list pods", "%v", err)
		}
		var bad []string
		for i := range pods {
			for _, p := range pullProblems(&pods[i]) {
				bad = append(bad, podRef(&pods[i])+": "+p)
			}
		}
		if len(bad) > 0 {
			return fail("check the image name and tag, that the node can reach the registry and its pull secret (for the proxy: trellis install --set image.registry=..., image.tag=...); kubectl describe pod",
				"%d containers cannot get their image: %s", len(bad), listOf(bad))
		}
		return ok("no meshed pod waits on an image (%d pods in %s)", len(pods), where(e))
	},
}

// NamespaceInjectCheck: every namespace's trellis.io/inject annotation is
// "enabled" or "disabled"; the injector refuses every pod of a namespace
// with any other value (e.g. "yes").
var NamespaceInjectCheck = Check{
	Group: "data plane", Name: "namespaces' " + k8slabels.AnnotationInject + " values are valid", Anchor: "namespace-inject",
	Run: func(ctx context.Context, e *Env) Outcome {
		list, err := e.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return fail("check that you may list namespaces", "list namespaces: %v", err)
		}
		var bad []string
		annotated := 0
		for _, ns := range list.Items {
			v, found := ns.Annotations[k8slabels.AnnotationInject]
			if !found {
				continue
			}
			annotated++
			if v != k8slabels.InjectEnabled && v != k8slabels.InjectDisabled {
				bad = append(bad, fmt.Sprintf("%s (%s=%q)", ns.Name, k8slabels.AnnotationInject, v))
			}
		}
		if len(bad) > 0 {
			return fail(`set it to "enabled" or "disabled": kubectl annotate namespace NS --overwrite trellis.io/inject=enabled (quote it in YAML: "enabled")`,
				"%d namespaces have an invalid value, and every pod created there is refused: %s", len(bad), listOf(bad))
		}
		return ok("%d namespaces annotated, all valid", annotated)
	},
}

// PodAnnotationsCheck: the Trellis annotations of every pod, and of every
// Deployment's pod template (whose pods the injector refuses, so they do
// not exist to be seen), parse; each object's bad annotations are listed
// together, so one read shows every fix.
var PodAnnotationsCheck = Check{
	Group: "data plane", Name: "pods' Trellis annotations are valid", Anchor: "pod-annotations",
	Run: func(ctx context.Context, e *Env) Outcome {
		pods, err := e.Kube.CoreV1().Pods(e.ProxyNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fail("check that you may list pods", "list pods: %v", err)
		}
		deps, err := e.Kube.AppsV1().Deployments(e.ProxyNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return fail("check that you may list deployments", "list deployments: %v", err)
		}
		var bad []string
		seen := 0
		judge := func(ref string, ann map[string]string) {
			if !hasTrellisAnnotation(ann) {
				return
			}
			seen++
			if msg := annotationErrors(ann); msg != "" {
				bad = append(bad, ref+": "+msg)
			}
		}
		for i := range deps.Items {
			d := &deps.Items[i]
			judge("deployment "+d.Namespace+"/"+d.Name, d.Spec.Template.Annotations)
		}
		for i := range pods.Items {
			judge("pod "+podRef(&pods.Items[i]), pods.Items[i].Annotations)
		}
		if len(bad) > 0 {
			return fail("fix the values named (docs/inject.md lists each annotation and its values); the injector refuses new pods with any of them",
				"%d objects have invalid Trellis annotations: %s", len(bad), strings.Join(bad, "; "))
		}
		return ok("%d objects with Trellis annotations in %s, all valid", seen, where(e))
	},
}

func hasTrellisAnnotation(ann map[string]string) bool {
	for k := range ann {
		if k == k8slabels.AnnotationInject || strings.HasPrefix(k, k8slabels.ConfigPrefix) {
			return true
		}
	}
	return false
}

// annotationErrors lists every malformed Trellis annotation of ann in one
// line, "" when all parse.
func annotationErrors(ann map[string]string) string {
	var msgs []string
	if v, found := ann[k8slabels.AnnotationInject]; found && v != k8slabels.InjectEnabled && v != k8slabels.InjectDisabled {
		msgs = append(msgs, fmt.Sprintf(`annotation %s=%q: must be "enabled" or "disabled"`, k8slabels.AnnotationInject, v))
	}
	if _, err := inject.ParseOptions(ann); err != nil {
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			for _, e := range joined.Unwrap() {
				msgs = append(msgs, e.Error())
			}
		} else {
			msgs = append(msgs, err.Error())
		}
	}
	return strings.Join(msgs, ", ")
}
