package check

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/install/vizk8s"
)

// VizCheck: when `trellis viz install` is there, its Prometheus is ready
// and scrapes (health up) a target for every running meshed pod. Without
// it: ok, it is optional.
var VizCheck = Check{
	Group: "viz", Name: "viz Prometheus scrapes every meshed pod", Anchor: "viz-prometheus",
	Run: func(ctx context.Context, e *Env) Outcome {
		const hint = "kubectl -n " + vizk8s.Namespace + " describe pod -l " + vizk8s.PodSelector + "; kubectl -n " + vizk8s.Namespace + " logs deploy/prometheus"
		if _, err := e.Kube.AppsV1().Deployments(vizk8s.Namespace).Get(ctx, "prometheus", metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return ok("not installed (optional: trellis viz install; trellis stat needs it)")
		} else if err != nil {
			return fail(hint, "get deployment %s/prometheus: %v", vizk8s.Namespace, err)
		}
		pods, err := e.Kube.CoreV1().Pods(vizk8s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: vizk8s.PodSelector})
		if err != nil {
			return fail(hint, "list pods of %s: %v", vizk8s.Namespace, err)
		}
		pod := readyPrometheusPod(pods.Items)
		if pod == "" {
			return fail(hint, "no ready Prometheus pod in %s", vizk8s.Namespace)
		}
		body, err := e.Scrape(ctx, vizk8s.Namespace, pod, vizk8s.ServicePort, "api/v1/targets")
		if err != nil {
			return fail(hint, "read Prometheus's targets: %v", err)
		}
		up, down, err := proxyTargets(body)
		if err != nil {
			return fail(hint, "Prometheus's targets: %v", err)
		}
		meshed, err := meshedPods(ctx, &Env{Kube: e.Kube})
		if err != nil {
			return fail(hint, "list meshed pods: %v", err)
		}
		running := 0
		for _, p := range meshed {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				running++
			}
		}
		if up < running {
			return warn("a pod started in the last scrape interval is fine; otherwise see Prometheus's targets: kubectl -n "+vizk8s.Namespace+" port-forward deploy/prometheus 9090, then /targets",
				"%d proxies scraped (up), %d down, for %d running meshed pods", up, down, running)
		}
		return ok("scraping %d proxies for %d running meshed pods", up, running)
	},
}

func readyPrometheusPod(pods []corev1.Pod) string {
	for _, p := range pods {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Name
			}
		}
	}
	return ""
}

// proxyTargets counts the active targets of the proxies' job by health,
// from Prometheus's /api/v1/targets answer.
func proxyTargets(body []byte) (up, down int, err error) {
	var ans struct {
		Status string `json:"status"`
		Data   struct {
			ActiveTargets []struct {
				Labels map[string]string `json:"labels"`
				Health string            `json:"health"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return 0, 0, fmt.Errorf("not a Prometheus API answer: %w", err)
	}
	if ans.Status != "success" {
		return 0, 0, fmt.Errorf("status %q", ans.Status)
	}
	for _, t := range ans.Data.ActiveTargets {
		if t.Labels["job"] != "trellis-proxy" {
			continue
		}
		if t.Health == "up" {
			up++
		} else {
			down++
		}
	}
	return up, down, nil
}
