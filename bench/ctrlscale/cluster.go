package main

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

const (
	namespace = "scale"
	svcPort   = 8080
)

// newClient is an admin client allowed to write fast: the default 5 QPS
// would make populating 10,000 pods take half an hour.
func newClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 5000, 5000
	cfg.UserAgent = "trellis-ctrlscale"
	return kubernetes.NewForConfig(cfg)
}

func svcName(i int) string    { return fmt.Sprintf("svc-%d", i) }
func podName(i, j int) string { return fmt.Sprintf("svc-%d-%d", i, j) }

// serviceAcct is the ServiceAccount of Service i's pods: one identity per
// workload, as in a real cluster, so each proxy's policy answer is
// computed over its own workload's pods.
func serviceAcct(i int) string { return fmt.Sprintf("app-%d", i) }

// proxyID is simulated proxy p's identity: a pod of Service p mod services.
func proxyID(p, services int) identity.ID {
	return identity.ID{TrustDomain: trustDomain, Namespace: namespace, ServiceAccount: serviceAcct(p % services)}
}
func sliceName(i int) string { return svcName(i) + "-1" }
func authority(i int) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local:%d", svcName(i), namespace, svcPort)
}

// ipFromIndex maps n to a distinct IPv4 address in 10.0.0.0/8, so every
// endpoint ever written (initial or churned) has its own address and an
// Add seen on a stream names exactly one write.
func ipFromIndex(n uint32) string {
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

// populate writes the namespace, a ServiceAccount, S Services without
// selectors, S*E meshed Pods and one EndpointSlice per Service, with
// `workers` writes in flight. Nothing runs the pods: there is no kubelet
// or scheduler, and no controller-manager rewrites the slices.
func populate(ctx context.Context, c kubernetes.Interface, services, endpoints, workers int) error {
	if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	return parallel(ctx, services, workers, func(ctx context.Context, i int) error {
		if _, err := c.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAcct(i)}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("serviceaccount %s: %w", serviceAcct(i), err)
		}
		for j := range endpoints {
			if _, err := c.CoreV1().Pods(namespace).Create(ctx, pod(i, j), metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("pod %s: %w", podName(i, j), err)
			}
		}
		if _, err := c.CoreV1().Services(namespace).Create(ctx, service(i), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("service %s: %w", svcName(i), err)
		}
		ips := make([]string, endpoints)
		for j := range ips {
			ips[j] = ipFromIndex(uint32(i*endpoints + j + 1))
		}
		if _, err := c.DiscoveryV1().EndpointSlices(namespace).Create(ctx, slice(i, ips), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("endpointslice %s: %w", sliceName(i), err)
		}
		return nil
	})
}

func pod(i, j int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(i, j), Namespace: namespace,
			// Meshed, so endpoints carry an identity as in a real mesh.
			Annotations: map[string]string{k8slabels.AnnotationProxyVersion: "bench"},
			Labels:      map[string]string{"app": svcName(i)}},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAcct(i), AutomountServiceAccountToken: new(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:0", Ports: []corev1.ContainerPort{{ContainerPort: svcPort}}}},
		},
	}
}

func service(i int) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName(i), Namespace: namespace},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: svcPort, AppProtocol: new("http")}}},
	}
}

// slice is Service i's EndpointSlice with the given addresses; endpoint j
// always names pod j of the Service.
func slice(i int, ips []string) *discoveryv1.EndpointSlice {
	eps := make([]discoveryv1.Endpoint, len(ips))
	for j, ip := range ips {
		eps[j] = discoveryv1.Endpoint{
			Addresses:  []string{ip},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: namespace, Name: podName(i, j)},
		}
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: sliceName(i), Namespace: namespace, Labels: map[string]string{
			discoveryv1.LabelServiceName: svcName(i), discoveryv1.LabelManagedBy: "trellis-ctrlscale",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(svcPort)), Protocol: new(corev1.ProtocolTCP)}},
	}
}

// parallel runs f(0..n-1) on `workers` goroutines and returns the first
// error, cancelling the rest.
func parallel(ctx context.Context, n, workers int, f func(context.Context, int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				if err := f(ctx, i); err != nil {
					cancel(err)
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}
