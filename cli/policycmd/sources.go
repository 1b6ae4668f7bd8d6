package policycmd

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/trellis-mesh/trellis/internal/httpget"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// MaxMetricsBody bounds one scrape.
const MaxMetricsBody = check.MaxMetricsBody

// Source lists the meshed pods of a namespace and scrapes their proxies.
type Source interface {
	Pods(ctx context.Context, namespace string) ([]Pod, error)
	Scrape(ctx context.Context, p Pod) ([]byte, error)
}

// KubeSource reads a cluster: pods from the API server, metrics through
// its pod proxy (as `trellis check --proxy` does: no port-forward).
type KubeSource struct{ Env *check.Env }

// Pods returns the running meshed pods of namespace.
func (k KubeSource) Pods(ctx context.Context, namespace string) ([]Pod, error) {
	if _, err := k.Env.Kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("namespace %q not found", namespace)
		}
		return nil, fmt.Errorf("namespace %q: %w", namespace, err)
	}
	list, err := k.Env.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", namespace, err)
	}
	var pods []Pod
	for _, p := range list.Items {
		if p.Status.Phase != corev1.PodRunning || !meshed(&p.Spec) {
			continue
		}
		pods = append(pods, Pod{Name: p.Name, Namespace: p.Namespace, ServiceAccount: p.Spec.ServiceAccountName,
			Labels: p.Labels, Annotations: p.Annotations, Ports: appPorts(&p.Spec)})
	}
	return pods, nil
}

// Scrape reads a pod's proxy metrics through the API server.
func (k KubeSource) Scrape(ctx context.Context, p Pod) ([]byte, error) {
	return k.Env.Scrape(ctx, p.Namespace, p.Name, check.ProxyAdminPort, "metrics")
}

func meshed(spec *corev1.PodSpec) bool {
	return slices.ContainsFunc(slices.Concat(spec.InitContainers, spec.Containers), func(c corev1.Container) bool {
		return c.Name == k8slabels.ProxyContainerName
	})
}

// appPorts are the TCP container ports of the app's containers.
func appPorts(spec *corev1.PodSpec) []uint32 {
	var ports []uint32
	for _, c := range spec.Containers {
		for _, cp := range c.Ports {
			if c.Name != k8slabels.ProxyContainerName && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) && !slices.Contains(ports, uint32(cp.ContainerPort)) {
				ports = append(ports, uint32(cp.ContainerPort))
			}
		}
	}
	return ports
}

// LocalSource reads a local-mode store file (the workloads) and scrapes
// each workload's proxy admin address (its adminAddr) over HTTP.
type LocalSource struct {
	Path   string
	Client *http.Client
}

// ReadStore decodes a store file strictly (the controller validates it;
// this is only the reading side).
func ReadStore(path string) (meshconfig.File, error) {
	var f meshconfig.File
	data, err := os.ReadFile(path)
	if err != nil {
		return f, fmt.Errorf("store file: %w", err)
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return f, fmt.Errorf("store file %s: %w", path, err)
	}
	return f, nil
}

// Pods returns the workloads of namespace in the store file.
func (l LocalSource) Pods(_ context.Context, namespace string) ([]Pod, error) {
	f, err := ReadStore(l.Path)
	if err != nil {
		return nil, err
	}
	var pods []Pod
	for _, w := range f.Workloads {
		if w.Namespace != namespace {
			continue
		}
		p := Pod{Name: w.Name, Namespace: w.Namespace, ServiceAccount: w.ServiceAccount, Labels: w.Labels}
		for _, e := range w.Endpoints {
			port := uint32(e.TargetPort)
			if port == 0 {
				port = uint32(e.Port)
			}
			if !slices.Contains(p.Ports, port) {
				p.Ports = append(p.Ports, port)
			}
		}
		pods = append(pods, p)
	}
	if len(pods) == 0 {
		return nil, fmt.Errorf("namespace %q: no workload of the store file %s is in it", namespace, l.Path)
	}
	return pods, nil
}

// Scrape GETs http://<adminAddr>/metrics of a workload's proxy.
func (l LocalSource) Scrape(ctx context.Context, p Pod) ([]byte, error) {
	f, err := ReadStore(l.Path)
	if err != nil {
		return nil, err
	}
	for _, w := range f.Workloads {
		if w.Name == p.Name && w.Namespace == p.Namespace {
			if w.AdminAddr == "" {
				return nil, fmt.Errorf("workload %s.%s: no adminAddr in the store file, so its proxy's metrics cannot be read", w.Name, w.Namespace)
			}
			return httpGet(ctx, l.Client, "http://"+w.AdminAddr+"/metrics")
		}
	}
	return nil, fmt.Errorf("workload %s.%s: not in the store file any more", p.Name, p.Namespace)
}

func httpGet(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	return httpget.Body(ctx, c, url, MaxMetricsBody)
}
