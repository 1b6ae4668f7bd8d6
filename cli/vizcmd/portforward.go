package vizcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	"github.com/trellis-mesh/trellis/install/vizk8s"
)

// ErrNotInstalled is a cluster without a ready viz Prometheus.
var ErrNotInstalled = errors.New("no ready Prometheus in namespace " + vizk8s.Namespace + ": run `trellis viz install | kubectl apply --server-side -f -` (or give --prometheus-url)")

// prometheusPod is a running, ready Prometheus pod of viz install.
func prometheusPod(ctx context.Context, cs kubernetes.Interface) (string, error) {
	pods, err := cs.CoreV1().Pods(vizk8s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: vizk8s.PodSelector})
	if err != nil {
		return "", fmt.Errorf("list pods of %s: %w", vizk8s.Namespace, err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return p.Name, nil
			}
		}
	}
	return "", ErrNotInstalled
}

// Installed reports whether the cluster runs a ready viz Prometheus.
func Installed(ctx context.Context, cs kubernetes.Interface) (bool, error) {
	_, err := prometheusPod(ctx, cs)
	if errors.Is(err, ErrNotInstalled) {
		return false, nil
	}
	return err == nil, err
}

// ForwardPrometheus port-forwards a loopback port to the viz Prometheus
// (through the API server, with the user's credentials, as kubectl
// port-forward does) and returns its URL; stop ends the forward.
func ForwardPrometheus(ctx context.Context, cfg *rest.Config, cs kubernetes.Interface) (url string, stop func(), err error) {
	pod, err := prometheusPod(ctx, cs)
	if err != nil {
		return "", nil, err
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward: %w", err)
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(vizk8s.Namespace).Name(pod).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	stopCh, ready := make(chan struct{}), make(chan struct{})
	var errOut strings.Builder
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", vizk8s.ServicePort)}, stopCh, ready, io.Discard, &errOut)
	if err != nil {
		return "", nil, fmt.Errorf("port-forward to %s/%s: %w", vizk8s.Namespace, pod, err)
	}
	done := make(chan error, 1)
	go func() { done <- fw.ForwardPorts() }()
	stop = func() { close(stopCh); <-done }
	select {
	case <-ready:
	case err := <-done:
		return "", nil, fmt.Errorf("port-forward to %s/%s: %w %s", vizk8s.Namespace, pod, err, errOut.String())
	case <-ctx.Done():
		stop()
		return "", nil, ctx.Err()
	case <-time.After(30 * time.Second):
		stop()
		return "", nil, fmt.Errorf("port-forward to %s/%s: not ready after 30 s", vizk8s.Namespace, pod)
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return "", nil, fmt.Errorf("port-forward to %s/%s: no local port: %v", vizk8s.Namespace, pod, err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", ports[0].Local), stop, nil
}
