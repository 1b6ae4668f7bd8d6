package mirror

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

func TestMain(m *testing.M) { apiservertest.Main(m) }

// TestMirror runs the mirror against a real kube-apiserver that plays
// both clusters: the link Secret's kubeconfig points back at it, so the
// peer side goes through remoteClient and a real watch. The peer's
// exported service books (two meshed pods, one unmeshed, one not ready)
// gets a mirror books-b with one slice of the meshed pods' IPs naming
// their identity in cluster b's trust domain; the slice follows the
// peer's; unexporting removes the mirror; a Service of the mirror's name
// that is not a mirror is never touched; deleting the link removes its
// mirrors.
func TestMirror(t *testing.T) {
	const ns, ctl = "mirror-test", "mirror-test-trellis"
	ctx, kc, raw := apiServerEnv(t, ns, ctl)
	// A Service that happens to have a mirror's name: not ours. A mirror
	// slice naming it, left from before that Service replaced a mirror,
	// must go: the peer's pods must never serve someone else's Service.
	must(t)(kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "authors-b"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{}))
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "authors-b-old", Labels: map[string]string{discoveryv1.LabelServiceName: "authors-b",
			discoveryv1.LabelManagedBy: mclink.ManagedBy, mclink.LabelLink: "b"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.245.9.9"}}},
	}, metav1.CreateOptions{}))

	reg := prometheus.NewRegistry()
	m, err := New(Config{Local: kc, Namespace: ctl, Registerer: reg, Log: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer runMirror(ctx, m)()
	link := mclink.Link{Cluster: "b", TrustDomain: "cluster-b.local", ClusterDomain: "cluster.local", Mode: mclink.ModeFlat, Kubeconfig: raw}
	must(t)(kc.CoreV1().Secrets(ctl).Create(ctx, link.Secret(ctl), metav1.CreateOptions{}))

	want := "10.245.0.11,10.245.0.12 as spiffe://cluster-b.local/ns/" + ns + "/sa/books"
	waitMirror(ctx, t, kc, ns, "books-b", want)
	svc, err := kc.CoreV1().Services(ns).Get(ctx, "books-b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Selector != nil || svc.Annotations[k8slabels.AnnotationOpaquePorts] != "9000" {
		t.Errorf("mirror service: ports %v selector %v annotations %v", svc.Spec.Ports, svc.Spec.Selector, svc.Annotations)
	}
	waitMirror(ctx, t, kc, ns, "evil-b", "") // the mirror, with no endpoint
	if got := testutil.ToFloat64(m.metrics.unmeshed.WithLabelValues("b", ns, "books")); got != 1 {
		t.Errorf("unmeshed endpoints of books: %v, want 1", got)
	}

	// The peer's slice changes: the mirror follows.
	sl, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, "books-x", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints = sl.Endpoints[1:]
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Update(ctx, sl, metav1.UpdateOptions{}))
	waitMirror(ctx, t, kc, ns, "books-b", "10.245.0.12 as spiffe://cluster-b.local/ns/"+ns+"/sa/books")

	// A hand edit of the mirror is put back.
	if err := kc.DiscoveryV1().EndpointSlices(ns).DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=books-b"}); err != nil {
		t.Fatal(err)
	}
	waitMirror(ctx, t, kc, ns, "books-b", "10.245.0.12 as spiffe://cluster-b.local/ns/"+ns+"/sa/books")

	if got := testutil.ToFloat64(m.metrics.conflicts.WithLabelValues("b")); got < 1 {
		t.Errorf("conflicts: %v, want the authors-b conflict counted", got)
	}
	if a, err := kc.CoreV1().Services(ns).Get(ctx, "authors-b", metav1.GetOptions{}); err != nil || a.Labels[mclink.LabelLink] != "" {
		t.Errorf("authors-b, not a mirror, was touched: %v %v", a.GetLabels(), err)
	}
	if got, err := mirrorState(ctx, kc, ns, "authors-b"); err != nil || got != "" {
		t.Errorf("authors-b, not a mirror, has slices of the peer: %q %v", got, err)
	}

	// Unexported: the mirror goes.
	books, err := kc.CoreV1().Services(ns).Get(ctx, "books", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	delete(books.Labels, mclink.LabelExport)
	must(t)(kc.CoreV1().Services(ns).Update(ctx, books, metav1.UpdateOptions{}))
	waitGone(ctx, t, kc, ns, "books-b")

	// Exported again, then the link deleted: the mirror goes.
	books.Labels[mclink.LabelExport] = "true"
	books.ResourceVersion = ""
	if _, err := kc.CoreV1().Services(ns).Update(ctx, books, metav1.UpdateOptions{}); err != nil {
		cur, _ := kc.CoreV1().Services(ns).Get(ctx, "books", metav1.GetOptions{})
		cur.Labels[mclink.LabelExport] = "true"
		must(t)(kc.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}))
	}
	waitMirror(ctx, t, kc, ns, "books-b", "10.245.0.12 as spiffe://cluster-b.local/ns/"+ns+"/sa/books")
	if err := kc.CoreV1().Secrets(ctl).Delete(ctx, mclink.SecretName("b"), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitGone(ctx, t, kc, ns, "books-b")
	if _, err := kc.CoreV1().Services(ns).Get(ctx, "authors-b", metav1.GetOptions{}); err != nil {
		t.Errorf("authors-b, not a mirror, was deleted with the link: %v", err)
	}
}

// peerObjects: in ns, the exported service books (port 80 -> 8080,
// opaque port 9000 annotated) and authors, the unexported service
// other, and a slice of books: two meshed pods, one unmeshed, and one
// meshed but not ready.
func peerObjects(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns string) {
	t.Helper()
	export := map[string]string{mclink.LabelExport: "true"}
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{{"books", export}, {"authors", export}, {"evil", export}, {"other", nil}} {
		must(t)(kc.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: s.name, Labels: s.labels, Annotations: map[string]string{k8slabels.AnnotationOpaquePorts: "9000"}},
			Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": s.name}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr8080}}},
		}, metav1.CreateOptions{}))
	}
	if _, err := kc.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "books"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// As the injector marks them: an annotation and a label.
	meshed := map[string]string{k8slabels.AnnotationProxyVersion: "test"}
	proxied := map[string]string{k8slabels.LabelProxied: "true"}
	for _, p := range []struct {
		name                string
		annotations, labels map[string]string
	}{{"books-1", meshed, proxied}, {"books-2", meshed, proxied}, {"books-3", nil, nil}, {"books-4", meshed, proxied}} {
		pod, err := kc.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Annotations: p.annotations, Labels: p.labels},
			Spec:       corev1.PodSpec{ServiceAccountName: "books", Containers: []corev1.Container{{Name: "app", Image: "books"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// As the kubelet reports them: books-N has 10.245.0.1N.
		ip := "10.245.0.1" + p.name[len(p.name)-1:]
		pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
		must(t)(kc.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}))
	}
	var eps []discoveryv1.Endpoint
	for i, name := range []string{"books-1", "books-2", "books-3", "books-4"} {
		eps = append(eps, discoveryv1.Endpoint{
			Addresses:  []string{fmt.Sprintf("10.245.0.%d", 11+i)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(name != "books-4")},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: name},
		})
	}
	// authors: one meshed endpoint, so its mirror would have a slice.
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "authors-x", Labels: map[string]string{discoveryv1.LabelServiceName: "authors"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   eps[:1],
	}, metav1.CreateOptions{}))
	// evil: a meshed pod's reference at an address that is not the pod's
	// (one of this cluster's, say).
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "evil-x", Labels: map[string]string{discoveryv1.LabelServiceName: "evil"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.0.5"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "books-1"}}},
	}, metav1.CreateOptions{}))
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "books-x", Labels: map[string]string{discoveryv1.LabelServiceName: "books"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints:   eps,
	}, metav1.CreateOptions{}))
}

var intstr8080 = intstr.FromInt32(8080)

// inlineKubeconfig is the kubeconfig at path with its files inlined: a link
// Secret's kubeconfig may name no file (mclink).
func inlineKubeconfig(t *testing.T, path string) []byte {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := clientcmdapi.FlattenConfig(cfg); err != nil {
		t.Fatal(err)
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var must = apiservertest.Must

// mirrorState renders a mirror's slices as "ip,ip as identity; ...".
func mirrorState(ctx context.Context, kc kubernetes.Interface, ns, name string) (string, error) {
	if _, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
		return "", err
	}
	sls, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
	if err != nil {
		return "", err
	}
	var parts []string
	for _, sl := range sls.Items {
		var ips []string
		for _, ep := range sl.Endpoints {
			ips = append(ips, ep.Addresses...)
		}
		slices.Sort(ips)
		parts = append(parts, strings.Join(ips, ",")+" as "+sl.Annotations[mclink.AnnotationRemoteIdentity])
	}
	slices.Sort(parts)
	return strings.Join(parts, "; "), nil
}

func waitMirror(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns, name, want string) {
	t.Helper()
	start := time.Now()
	var got string
	var err error
	for time.Since(start) < time.Minute {
		if got, err = mirrorState(ctx, kc, ns, name); err == nil && got == want {
			t.Logf("mirror %s: %s after %s", name, got, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("mirror %s: %q (%v), want %q", name, got, err, want)
}

func waitGone(ctx context.Context, t *testing.T, kc kubernetes.Interface, ns, name string) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < time.Minute {
		_, err := kc.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		sls, lerr := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + name})
		if apierrors.IsNotFound(err) && lerr == nil && len(sls.Items) == 0 {
			t.Logf("mirror %s removed after %s", name, time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("mirror %s still there after a minute", name)
}

// apiServerEnv starts the real API server's test cluster, returns a
// context bounding the test, a client, and the kubeconfig inlined as a
// link carries it; it creates the peer namespace ns (with peerObjects)
// and the controller namespace ctl.
func apiServerEnv(t *testing.T, ns, ctl string) (context.Context, kubernetes.Interface, []byte) {
	t.Helper()
	kubeconfig := apiservertest.Kubeconfig(t)
	raw := inlineKubeconfig(t, kubeconfig)
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	kc := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	for _, n := range []string{ns, ctl} {
		if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	peerObjects(ctx, t, kc, ns)
	return ctx, kc, raw
}

// runMirror runs m until the returned func, which waits for it to stop.
func runMirror(ctx context.Context, m *Mirror) (stop func()) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); m.Run(rctx, 2) }()
	return func() { cancel(); <-done }
}

// TestMirrorGateway: a link in gateway mode mirrors books with one slice
// per identity whose only endpoint is the peer's gateway, every port at
// the gateway's port, marked via-gateway; with no serving meshed pod
// left, the mirror has no endpoint (so routes fail over).
func TestMirrorGateway(t *testing.T) {
	const ns, ctl = "mirror-gw-test", "mirror-gw-test-trellis"
	ctx, kc, raw := apiServerEnv(t, ns, ctl)
	m, err := New(Config{Local: kc, Namespace: ctl, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer runMirror(ctx, m)()
	link := mclink.Link{Cluster: "c", TrustDomain: "cluster-c.local", ClusterDomain: "cluster.local", Mode: mclink.ModeGateway, Gateway: "172.31.255.9:4180", Kubeconfig: raw}
	must(t)(kc.CoreV1().Secrets(ctl).Create(ctx, link.Secret(ctl), metav1.CreateOptions{}))

	waitMirror(ctx, t, kc, ns, "books-c", "172.31.255.9 as spiffe://cluster-c.local/ns/"+ns+"/sa/books")
	sls, err := kc.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=books-c"})
	if err != nil || len(sls.Items) != 1 {
		t.Fatalf("slices of books-c: %v, %v", sls, err)
	}
	sl := sls.Items[0]
	if sl.Labels[mclink.LabelViaGateway] != "true" || len(sl.Ports) != 1 || *sl.Ports[0].Port != 4180 || *sl.Ports[0].Name != "http" {
		t.Errorf("gateway slice: labels %v ports %+v", sl.Labels, sl.Ports)
	}

	// No serving meshed pod left in the peer: no endpoint here.
	peer, err := kc.DiscoveryV1().EndpointSlices(ns).Get(ctx, "books-x", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range peer.Endpoints {
		peer.Endpoints[i].Conditions.Ready = ptr(false)
	}
	must(t)(kc.DiscoveryV1().EndpointSlices(ns).Update(ctx, peer, metav1.UpdateOptions{}))
	waitMirror(ctx, t, kc, ns, "books-c", "")
}
