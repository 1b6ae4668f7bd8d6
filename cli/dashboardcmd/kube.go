package dashboardcmd

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	prommodel "github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/model"
)

// querier runs instant PromQL queries (viz/prom's Client).
type querier interface {
	Query(ctx context.Context, expr string) (prommodel.Vector, error)
}

// kubeViews answers the identity and policy pages on Kubernetes: the
// meshed pods (listed with the user's credentials) say who each proxy is,
// Prometheus when the certificate expires and what was decided.
type kubeViews struct {
	client kubernetes.Interface
	prom   querier
}

// meshedPod is one pod with a Trellis proxy.
type meshedPod struct {
	workload model.Resource
	identity string
}

func (k *kubeViews) meshedPods(ctx context.Context, ns string) (map[string]meshedPod, error) {
	pods, err := k.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	out := map[string]meshedPod{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if c := proxyContainer(p); c != nil {
			out[p.Namespace+"/"+p.Name] = meshedPod{workload: owner(p), identity: proxyIdentity(p, c)}
		}
	}
	return out, nil
}

// Identities lists every meshed pod's identity, with its certificate's
// expiry when Prometheus has it (unknown otherwise).
func (k *kubeViews) Identities(ctx context.Context, ns string) ([]dashboard.Identity, error) {
	pods, err := k.meshedPods(ctx, ns)
	if err != nil {
		return nil, err
	}
	expiry := map[string]time.Time{}
	if k.prom != nil {
		q := "max by (namespace, pod) (trellis_identity_cert_expiry_timestamp_seconds" + nsSelector(ns) + ")"
		samples, err := k.query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, s := range samples {
			sec, frac := math.Modf(float64(s.Value))
			expiry[string(s.Metric["namespace"])+"/"+string(s.Metric["pod"])] = time.Unix(int64(sec), int64(frac*1e9))
		}
	}
	var out []dashboard.Identity
	for key, p := range pods {
		_, pod, _ := strings.Cut(key, "/")
		out = append(out, dashboard.Identity{Resource: p.workload, Pod: pod, Identity: p.identity, NotAfter: expiry[key]})
	}
	return out, nil
}

// Decisions sums the proxies' authorization counters over window by
// workload (pods mapped to their owner).
func (k *kubeViews) Decisions(ctx context.Context, ns string, window time.Duration) ([]dashboard.Decision, error) {
	if k.prom == nil {
		return nil, fmt.Errorf("no Prometheus")
	}
	pods, err := k.meshedPods(ctx, ns)
	if err != nil {
		return nil, err
	}
	rng := prommodel.Duration(window).String()
	sums := map[dashboard.Decision]float64{}
	for _, kind := range []string{"allow", "deny", "audit"} {
		q := fmt.Sprintf("sum by (namespace, pod, server, route, authz, reason, client_id, tls) (increase(trellis_inbound_authz_%s_total%s[%s])) > 0",
			kind, nsSelector(ns), rng)
		samples, err := k.query(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, s := range samples {
			m := s.Metric
			d := dashboard.Decision{Decision: kind, Server: string(m["server"]), Route: string(m["route"]), Authz: string(m["authz"]),
				Reason: string(m["reason"]), ClientID: string(m["client_id"]), TLS: m["tls"] == "true"}
			key := string(m["namespace"]) + "/" + string(m["pod"])
			if p, ok := pods[key]; ok {
				d.Resource = p.workload
			} else {
				d.Resource = model.Resource{Kind: "pods", Namespace: string(m["namespace"]), Name: string(m["pod"])}
			}
			sums[d] += float64(s.Value)
		}
	}
	out := make([]dashboard.Decision, 0, len(sums))
	for d, n := range sums {
		d.Count = math.Round(n)
		out = append(out, d)
	}
	return out, nil
}

func (k *kubeViews) query(ctx context.Context, q string) (prommodel.Vector, error) {
	return k.prom.Query(ctx, q)
}

// nsSelector is the label selector of a namespace ("" = every one); the
// namespace was checked as a DNS label by the dashboard.
func nsSelector(ns string) string {
	if ns == "" {
		return ""
	}
	return `{namespace="` + ns + `"}`
}

// proxyContainer is the pod's trellis-proxy (a native sidecar, or a plain
// container on older injections), nil when the pod is not meshed.
func proxyContainer(p *corev1.Pod) *corev1.Container {
	for _, list := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for i := range list {
			if list[i].Name == k8slabels.ProxyContainerName {
				return &list[i]
			}
		}
	}
	return nil
}

// proxyIdentity is the proxy's TRELLIS_PROXY_IDENTITY with the pod's
// namespace and service account put in (the injector writes it with
// $(TRELLIS_POD_NAMESPACE) and $(TRELLIS_POD_SA)).
func proxyIdentity(p *corev1.Pod, c *corev1.Container) string {
	for _, e := range c.Env {
		if e.Name == "TRELLIS_PROXY_IDENTITY" {
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			return strings.NewReplacer("$(TRELLIS_POD_NAMESPACE)", p.Namespace, "$(TRELLIS_POD_SA)", sa).Replace(e.Value)
		}
	}
	return ""
}

// owner is the workload a pod belongs to, kubectl-style: a ReplicaSet's
// pod is its Deployment's when the pod-template-hash says so.
func owner(p *corev1.Pod) model.Resource {
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		kind := strings.ToLower(ref.Kind) + "s"
		name := ref.Name
		if hash := p.Labels["pod-template-hash"]; ref.Kind == "ReplicaSet" && hash != "" && strings.HasSuffix(name, "-"+hash) {
			kind, name = "deployments", strings.TrimSuffix(name, "-"+hash)
		}
		return model.Resource{Kind: kind, Namespace: p.Namespace, Name: name}
	}
	return model.Resource{Kind: "pods", Namespace: p.Namespace, Name: p.Name}
}
