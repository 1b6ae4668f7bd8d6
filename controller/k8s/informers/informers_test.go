package informers

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

func TestIPKey(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "::ffff:10.0.0.1": "10.0.0.1", "fd00::0001": "fd00::1",
		"None": "", "": "", "fe80::1%eth0": "", "10.0.0.256": "",
	} {
		got, ok := IPKey(in)
		if got != want || ok != (want != "") {
			t.Errorf("IPKey(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// fullPod is a pod as the API server returns it: defaults, status
// conditions, managed fields and foreign annotations, none of which the
// mesh reads.
func fullPod() *corev1.Pod {
	yes, no := true, false
	del := metav1.NewTime(time.Unix(200, 0))
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f-abcde", GenerateName: "web-7d9f-", Namespace: "shop", UID: "u-1",
			ResourceVersion: "42", Generation: 3, CreationTimestamp: metav1.NewTime(time.Unix(100, 0)), DeletionTimestamp: &del,
			Labels: map[string]string{"app": "web", "pod-template-hash": "7d9f"},
			Annotations: map[string]string{
				k8slabels.AnnotationOpaquePorts: "3306", k8slabels.AnnotationProxyVersion: "v1",
				k8slabels.AnnotationTrustAnchors: "PEM", "kubectl.kubernetes.io/last-applied-configuration": "{}", "notrellis.io/x": "y"},
			OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "v1", Kind: "Other", Name: "not-controller", UID: "u-2", Controller: &no},
				{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f", UID: "u-3", Controller: &yes, BlockOwnerDeletion: &yes},
			},
			Finalizers:    []string{"x"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web", DeprecatedServiceAccount: "web", NodeName: "node-1", HostNetwork: false,
			InitContainers: []corev1.Container{
				{Name: "trellis-init", Image: "init", Args: []string{"--redirect"}},
				{Name: "trellis-proxy", Image: "proxy", Env: []corev1.EnvVar{{Name: "X"}},
					Ports:         []corev1.ContainerPort{{Name: "admin", ContainerPort: 4191, Protocol: corev1.ProtocolTCP}},
					LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt32(4191), Scheme: "HTTP"}}, PeriodSeconds: 10}},
			},
			Containers: []corev1.Container{
				{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, HostPort: 80, Protocol: corev1.ProtocolTCP}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready?x=1", Port: intstr.FromString("http"),
						HTTPHeaders: []corev1.HTTPHeader{{Name: "h", Value: "v"}}}}, TimeoutSeconds: 1},
					LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}}},
					StartupProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
					Resources:     corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}}},
				{Name: "logger", Image: "logger", VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/v"}}},
			},
			Volumes:     []corev1.Volume{{Name: "v"}},
			Tolerations: []corev1.Toleration{{Key: "k"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}, HostIP: "192.168.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}, ContainerStatuses: []corev1.ContainerStatus{{Name: "app"}}},
	}
}

// TestTrimPod: the cached pod is exactly what the readers use (see
// trimPod), nothing more.
func TestTrimPod(t *testing.T) {
	yes := true
	del := metav1.NewTime(time.Unix(200, 0))
	want := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Name: "web-7d9f-abcde", Namespace: "shop", ResourceVersion: "42",
			CreationTimestamp: metav1.NewTime(time.Unix(100, 0)), DeletionTimestamp: &del,
			Labels:          map[string]string{"app": "web", "pod-template-hash": "7d9f"},
			Annotations:     map[string]string{k8slabels.AnnotationOpaquePorts: "3306", k8slabels.AnnotationProxyVersion: "v1"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f", Controller: &yes}}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web", NodeName: "node-1",
			InitContainers: []corev1.Container{{Name: "trellis-proxy",
				Ports:         []corev1.ContainerPort{{Name: "admin", ContainerPort: 4191}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt32(4191)}}}}},
			Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready?x=1", Port: intstr.FromString("http")}}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}}},
	}
	for _, tt := range []struct {
		name string
		edit func(in, want *corev1.Pod)
	}{
		{"full pod", func(in, want *corev1.Pod) {}},
		{"no owner is the controller", func(in, want *corev1.Pod) {
			in.OwnerReferences = in.OwnerReferences[:1]
			want.OwnerReferences = nil
		}},
		{"unmeshed, no labels, no annotations", func(in, want *corev1.Pod) {
			in.Spec.InitContainers, in.Labels, in.Annotations = nil, nil, nil
			want.Spec.InitContainers, want.Labels, want.Annotations = nil, nil, nil
		}},
		{"proxy container without ports is kept (meshed)", func(in, want *corev1.Pod) {
			in.Spec.InitContainers = []corev1.Container{{Name: k8slabels.ProxyContainerName, Image: "proxy"}}
			want.Spec.InitContainers = []corev1.Container{{Name: k8slabels.ProxyContainerName}}
		}},
		{"pending: no IP, no node", func(in, want *corev1.Pod) {
			in.Spec.NodeName, in.Status = "", corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled}}}
			want.Spec.NodeName, want.Status = "", corev1.PodStatus{Phase: corev1.PodPending}
		}},
		{"dual stack", func(in, want *corev1.Pod) {
			in.Status.PodIPs = append(in.Status.PodIPs, corev1.PodIP{IP: "fd00::1"})
			want.Status.PodIPs = []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}}
		}},
		{"host network", func(in, want *corev1.Pod) { in.Spec.HostNetwork, want.Spec.HostNetwork = true, true }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in, w := fullPod(), want.DeepCopy()
			tt.edit(in, w)
			got, err := trim(in)
			if err != nil {
				t.Fatal(err)
			}
			if !apiequality.Semantic.DeepEqual(got, w) {
				t.Errorf("trimmed pod:\n got %+v\nwant %+v", got, w)
			}
		})
	}
}

// TestTrimPodSameAnswers: inbound policy computed from the trimmed pod
// (Server selection by labels and named ports, the probes route) is the
// one computed from the full pod. The endpoints package's tests run on
// trimmed pods through the informers.
func TestTrimPodSameAnswers(t *testing.T) {
	full := fullPod()
	obj, err := trim(fullPod())
	if err != nil {
		t.Fatal(err)
	}
	trimmed := obj.(*corev1.Pod)
	servers := []*policyv1.Server{
		{ObjectMeta: metav1.ObjectMeta{Name: "by-name", Namespace: "shop"}, Spec: policyv1.ServerSpec{
			PodSelector: policyv1.PodSelector{MatchLabels: map[string]policyv1.LabelValue{"app": "web"}}, Port: intstr.FromString("http")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "admin", Namespace: "shop"}, Spec: policyv1.ServerSpec{
			PodSelector: policyv1.PodSelector{MatchLabels: map[string]policyv1.LabelValue{"pod-template-hash": "7d9f"}}, Port: intstr.FromString("admin")}},
		{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "shop"}, Spec: policyv1.ServerSpec{
			PodSelector: policyv1.PodSelector{MatchLabels: map[string]policyv1.LabelValue{"app": "db"}}, Port: intstr.FromInt32(5432)}},
	}
	for _, port := range []uint32{80, 4191, 5432, 8080} {
		if a, b := policymodel.ProbePaths([]*corev1.Pod{full}, port), policymodel.ProbePaths([]*corev1.Pod{trimmed}, port); !slices.Equal(a, b) {
			t.Errorf("port %d: probe paths %v from the full pod, %v from the trimmed one", port, a, b)
		}
		a, b := policymodel.ServerFor(full, port, servers), policymodel.ServerFor(trimmed, port, servers)
		if a != b {
			t.Errorf("port %d: Server %v from the full pod, %v from the trimmed one", port, a, b)
		}
		for _, s := range servers {
			if a, b := policymodel.ServerPorts(s, full), policymodel.ServerPorts(s, trimmed); !slices.Equal(a, b) {
				t.Errorf("Server %s: ports %v from the full pod, %v from the trimmed one", s.Name, a, b)
			}
		}
	}
	if !slices.Equal(PodIPs(full), PodIPs(trimmed)) {
		t.Errorf("pod IPs %v, trimmed %v", PodIPs(full), PodIPs(trimmed))
	}
}

func TestPodIndex(t *testing.T) {
	pod := func(phase corev1.PodPhase, host bool) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{HostNetwork: host}, Status: corev1.PodStatus{Phase: phase, PodIP: "10.0.0.1"}}
	}
	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		want int
	}{
		{"running", pod(corev1.PodRunning, false), 1},
		{"host network", pod(corev1.PodRunning, true), 0},
		{"succeeded", pod(corev1.PodSucceeded, false), 0},
		{"failed", pod(corev1.PodFailed, false), 0},
	} {
		if got, _ := podIPs(tt.pod); len(got) != tt.want {
			t.Errorf("%s: indexed under %v", tt.name, got)
		}
	}
}

// TestWatchNamespaces: the Namespace informer is started and synced with
// the others, and its lister serves trimmed namespaces.
func TestWatchNamespaces(t *testing.T) {
	client := fake.NewClientset(&corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{"trellis.io/inject": "enabled"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.NamespaceSpec{Finalizers: []corev1.FinalizerName{"kubernetes"}},
	})
	c, err := New(client, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespaces != nil {
		t.Fatal("Namespaces lister before WatchNamespaces")
	}
	c.WatchNamespaces()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bg, stop := context.WithCancel(context.Background())
	c.Start(bg)
	defer func() { stop(); c.Shutdown() }()
	if err := c.WaitForSync(ctx); err != nil {
		t.Fatal(err)
	}
	ns, err := c.Namespaces.Get("shop")
	if err != nil {
		t.Fatal(err)
	}
	if ns.Annotations["trellis.io/inject"] != "enabled" {
		t.Errorf("annotations %v", ns.Annotations)
	}
	if ns.ManagedFields != nil || ns.Spec.Finalizers != nil {
		t.Errorf("namespace not trimmed: %+v", ns)
	}
	if _, err := c.Namespaces.Get("absent"); !apierrors.IsNotFound(err) {
		t.Errorf("absent namespace: %v, want NotFound", err)
	}
}

func TestTrimNodeAndService(t *testing.T) {
	n, err := trim(&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{corev1.LabelTopologyZone: "z"}},
		Status:     corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"big"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if node := n.(*corev1.Node); node.Labels[corev1.LabelTopologyZone] != "z" || node.Status.Images != nil {
		t.Errorf("node trimmed wrong: %+v", node)
	}
	s, err := trim(&corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Annotations: map[string]string{k8slabels.AnnotationOpaquePorts: "1", "other": "x"}},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.1"},
		Status:     corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if svc := s.(*corev1.Service); svc.Spec.ClusterIP != "10.96.0.1" || len(svc.Annotations) != 1 || svc.Status.LoadBalancer.Ingress != nil {
		t.Errorf("service trimmed wrong: %+v", svc)
	}
}

func TestMeshAnnotations(t *testing.T) {
	for _, tt := range []struct {
		in   map[string]string
		want []string
	}{
		{nil, nil},
		{map[string]string{"kubectl.kubernetes.io/last-applied-configuration": "{}"}, nil},
		{map[string]string{k8slabels.AnnotationOpaquePorts: "1", k8slabels.AnnotationInject: "enabled"}, []string{k8slabels.AnnotationOpaquePorts, k8slabels.AnnotationInject}},
		{map[string]string{k8slabels.AnnotationTrustAnchors: "PEM", k8slabels.AnnotationProxyVersion: "v1", "evil.nottrellis.io/x": "", "trellis.io": ""}, []string{k8slabels.AnnotationProxyVersion}},
	} {
		got := meshAnnotations(tt.in)
		if len(got) != len(tt.want) {
			t.Errorf("meshAnnotations(%v) = %v, want keys %v", tt.in, got, tt.want)
			continue
		}
		for _, k := range tt.want {
			if got[k] != tt.in[k] {
				t.Errorf("meshAnnotations(%v) = %v, want keys %v", tt.in, got, tt.want)
			}
		}
	}
}
