package informers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
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

func TestTrimKeepsWhatIsRead(t *testing.T) {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", Annotations: map[string]string{
			k8slabels.AnnotationOpaquePorts: "3306", k8slabels.AnnotationProxyVersion: "v1",
			k8slabels.AnnotationTrustAnchors: "PEM", "kubectl.kubernetes.io/last-applied-configuration": "{}", "notrellis.io/x": "y"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "sa", NodeName: "n",
			InitContainers: []corev1.Container{{Name: "trellis-proxy", Image: "proxy", Env: []corev1.EnvVar{{Name: "X"}}}},
			Containers: []corev1.Container{{Name: "app", Image: "app", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}},
				LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live"}}},
				StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/start"}}}}},
			Volumes: []corev1.Volume{{Name: "v"}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady}}},
	}
	obj, err := trim(p)
	if err != nil {
		t.Fatal(err)
	}
	q := obj.(*corev1.Pod)
	c := q.Spec.Containers[0]
	if q.Name != "p" || q.Annotations[k8slabels.AnnotationOpaquePorts] != "3306" || q.Annotations[k8slabels.AnnotationProxyVersion] != "v1" ||
		c.ReadinessProbe.HTTPGet.Path != "/ready" || c.LivenessProbe.HTTPGet.Path != "/live" || c.StartupProbe.HTTPGet.Path != "/start" ||
		q.Spec.ServiceAccountName != "sa" || q.Spec.NodeName != "n" ||
		q.Spec.InitContainers[0].Name != "trellis-proxy" || q.Spec.Containers[0].Ports[0].ContainerPort != 80 ||
		q.Status.Phase != corev1.PodRunning || PodIPs(q)[0] != "10.0.0.1" {
		t.Fatalf("trimmed pod lost a field the mesh reads: %+v", q)
	}
	if len(q.Annotations) != 2 || q.ManagedFields != nil || q.Spec.Volumes != nil || q.Status.Conditions != nil || q.Spec.InitContainers[0].Env != nil {
		t.Fatalf("trimmed pod kept what the mesh never reads: %+v", q)
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
