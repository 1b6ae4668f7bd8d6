package endpoints

import (
	"context"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	workloadfake "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/fake"
	workloadscheme "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned/scheme"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/k8s/informers/informerstest"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// loadFixture decodes a multi-document YAML file of Kubernetes objects.
func loadFixture(t *testing.T, path string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []runtime.Object
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, _, err := fixtureCodecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", path, err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

// fixtureCodecs decode Kubernetes' kinds and ExternalWorkloads.
var fixtureCodecs = func() serializer.CodecFactory {
	s := runtime.NewScheme()
	utilruntime.Must(scheme.AddToScheme(s))
	utilruntime.Must(workloadscheme.AddToScheme(s))
	return serializer.NewCodecFactory(s)
}()

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

type fixture struct {
	client    *fake.Clientset
	workloads *workloadfake.Clientset
	src       *Source
}

// start feeds the objects to fake clientsets (ExternalWorkloads to the
// workload.trellis.io one), runs the informers over them and returns a
// synced source.
func start(t *testing.T, objs ...runtime.Object) fixture {
	t.Helper()
	return startWith(t, true, objs...)
}

// startWith is start, with ExternalWorkloads watched or not (their CRD
// not installed).
func startWith(t *testing.T, watchWorkloads bool, objs ...runtime.Object) fixture {
	t.Helper()
	var core, workloads []runtime.Object
	for _, o := range objs {
		if _, ok := o.(*workloadv1.ExternalWorkload); ok {
			workloads = append(workloads, o)
		} else {
			core = append(core, o)
		}
	}
	client, wclient := fake.NewClientset(core...), workloadfake.NewSimpleClientset(workloads...)
	waitWatches := informerstest.CountWatches(t, client, wclient)
	informerCount := 4
	c, err := informers.New(client, 0)
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(c, Options{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if watchWorkloads {
		informerCount++
		if err := c.WatchExternalWorkloads(wclient); err != nil {
			t.Fatal(err)
		}
		if err := src.WatchExternalWorkloads(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); c.Shutdown() })
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	c.Start(ctx)
	if err := c.WaitForSync(sctx); err != nil {
		t.Fatal(err)
	}
	if !cache.WaitForCacheSync(sctx.Done(), src.HasSynced) {
		t.Fatal("handlers did not sync")
	}
	waitWatches(informerCount)
	return fixture{client: client, workloads: wclient, src: src}
}

func resolve(t *testing.T, src destination.Source, path, callerNS string) destination.Resolution {
	t.Helper()
	a, err := authority.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	r, _, release := src.Resolve(a, callerNS)
	release()
	return r
}

func addrs(e destination.Endpoints) string {
	var out []string
	for k := range e.Addrs {
		out = append(out, k)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestResolve(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/cluster.yaml")...)
	booksID := &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/demo/sa/books", ServerName: "books.demo.serviceaccount.identity.cluster.local"}
	dbID := &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/demo/sa/db", ServerName: "db.demo.serviceaccount.identity.cluster.local"}
	tests := []struct {
		name, path, caller string
		exists             bool
		addrs              string
		service            string
		hint               apiv1.ProtocolHint_Protocol
		hints              map[string]apiv1.ProtocolHint_Protocol // per address, overrides hint
		identity           map[string]*apiv1.TlsIdentity          // nil entry: plain text
		zone               map[string]string
	}{
		{name: "cluster ip service: ready only, not terminating", path: "books.demo.svc.cluster.local:80", exists: true,
			addrs: "10.244.0.11:8080,10.244.0.12:8080", service: "books.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1,
			identity: map[string]*apiv1.TlsIdentity{"10.244.0.11:8080": booksID, "10.244.0.12:8080": booksID},
			zone:     map[string]string{"10.244.0.11:8080": "zone-a", "10.244.0.12:8080": ""}},
		{name: "short name in caller namespace", path: "books:80", caller: "demo", exists: true, addrs: "10.244.0.11:8080,10.244.0.12:8080", service: "books.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1},
		{name: "name.ns", path: "books.demo:80", exists: true, addrs: "10.244.0.11:8080,10.244.0.12:8080", service: "books.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1},
		{name: "name.ns.svc", path: "Books.Demo.svc:80", exists: true, addrs: "10.244.0.11:8080,10.244.0.12:8080", service: "books.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1},
		{name: "cluster ip", path: "10.96.0.10:80", exists: true, addrs: "10.244.0.11:8080,10.244.0.12:8080", service: "books.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1},
		{name: "grpc port", path: "books.demo:7000", exists: true, addrs: "10.244.0.11:9090,10.244.0.12:9090", service: "books.demo.svc.cluster.local:7000", hint: apiv1.ProtocolHint_GRPC},
		{name: "h2c port", path: "books.demo:81", exists: true, addrs: "10.244.0.11:8081,10.244.0.12:8081", service: "books.demo.svc.cluster.local:81", hint: apiv1.ProtocolHint_HTTP2},
		{name: "tcp port; one pod's redirection skips it: plain text there", path: "books.demo:82", exists: true, addrs: "10.244.0.11:8082,10.244.0.12:8082", service: "books.demo.svc.cluster.local:82", hint: apiv1.ProtocolHint_OPAQUE,
			identity: map[string]*apiv1.TlsIdentity{"10.244.0.11:8082": nil, "10.244.0.12:8082": booksID}},
		{name: "pod ip, a port in the skipped range", path: "10.244.0.11:9050", exists: true, addrs: "10.244.0.11:9050", identity: map[string]*apiv1.TlsIdentity{"10.244.0.11:9050": nil}},
		{name: "no app protocol; pod annotation makes one opaque", path: "10.96.0.10:83", exists: true, addrs: "10.244.0.11:8083,10.244.0.12:8083", service: "books.demo.svc.cluster.local:83",
			hints: map[string]apiv1.ProtocolHint_Protocol{"10.244.0.11:8083": apiv1.ProtocolHint_OPAQUE}},
		{name: "unknown port of a service", path: "books.demo:99"},
		{name: "unknown service", path: "nothere.demo:80"},
		{name: "bare name, caller unknown", path: "books:80"},
		{name: "other cluster domain", path: "books.demo.svc.example.com:80"},
		{name: "external name", path: "ext.demo:80"},
		{name: "unknown cluster ip port", path: "10.96.0.10:9999"},
		{name: "headless service", path: "db.demo.svc.cluster.local:5432", exists: true, addrs: "10.244.0.21:5432,10.244.0.22:5432",
			service: "db.demo.svc.cluster.local:5432", hint: apiv1.ProtocolHint_OPAQUE,
			identity: map[string]*apiv1.TlsIdentity{"10.244.0.21:5432": dbID}},
		{name: "headless pod name", path: "db-0.db.demo.svc.cluster.local:5432", exists: true, addrs: "10.244.0.21:5432",
			service: "db.demo.svc.cluster.local:5432", hint: apiv1.ProtocolHint_OPAQUE},
		{name: "pod ip, hint from the service", path: "10.244.0.11:8080", exists: true, addrs: "10.244.0.11:8080", hint: apiv1.ProtocolHint_HTTP1,
			identity: map[string]*apiv1.TlsIdentity{"10.244.0.11:8080": booksID}, zone: map[string]string{"10.244.0.11:8080": "zone-a"}},
		{name: "pod ip, opaque by pod annotation", path: "10.244.0.11:8083", exists: true, addrs: "10.244.0.11:8083", hint: apiv1.ProtocolHint_OPAQUE},
		{name: "pod ip, opaque by service annotation", path: "10.244.0.21:5432", exists: true, addrs: "10.244.0.21:5432", hint: apiv1.ProtocolHint_OPAQUE, identity: map[string]*apiv1.TlsIdentity{"10.244.0.21:5432": dbID}},
		{name: "pod ip, any port", path: "10.244.0.12:1234", exists: true, addrs: "10.244.0.12:1234", identity: map[string]*apiv1.TlsIdentity{"10.244.0.12:1234": booksID}},
		{name: "not-ready pod ip still answers", path: "10.244.0.13:8080", exists: true, addrs: "10.244.0.13:8080", hint: apiv1.ProtocolHint_HTTP1},
		{name: "unmeshed service", path: "plain.demo:80", exists: true, addrs: "10.244.0.15:8080", service: "plain.demo.svc.cluster.local:80",
			identity: map[string]*apiv1.TlsIdentity{"10.244.0.15:8080": nil}},
		{name: "unmeshed pod ip", path: "10.244.0.15:8080", exists: true, addrs: "10.244.0.15:8080", identity: map[string]*apiv1.TlsIdentity{"10.244.0.15:8080": nil}},
		{name: "unknown ip", path: "10.244.9.9:80"},
		{name: "mirror of another cluster: the identity its slice names; none without a valid one", path: "books-b.demo:80", exists: true,
			addrs: "10.245.0.11:8080", service: "books-b.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1,
			identity: map[string]*apiv1.TlsIdentity{"10.245.0.11:8080": {SpiffeId: "spiffe://cluster-b.local/ns/demo/sa/books",
				ServerName: "books.demo.serviceaccount.identity.cluster-b.local"}}},
		{name: "mirror through a gateway: the gateway's address, the identity, the routing name", path: "books-c.demo:80", exists: true,
			addrs: "172.31.255.2:4180", service: "books-c.demo.svc.cluster.local:80", hint: apiv1.ProtocolHint_HTTP1,
			identity: map[string]*apiv1.TlsIdentity{"172.31.255.2:4180": {SpiffeId: "spiffe://cluster-c.local/ns/demo/sa/books",
				ServerName: "80.books.demo.svc.cluster.local"}}},
	}
	// The fixture labels books and the mirror books-b exported; only books
	// is (a mirror is never exported onwards).
	exported := func(service string) bool { return strings.HasPrefix(service, "books.demo.svc.cluster.local:") }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := resolve(t, f.src, tt.path, tt.caller)
			e := r.Endpoints
			if e.Exists != tt.exists || addrs(e) != tt.addrs || r.Service != tt.service {
				t.Fatalf("got exists=%v addrs=%q service=%q, want %v %q %q", e.Exists, addrs(e), r.Service, tt.exists, tt.addrs, tt.service)
			}
			if r.Exported != exported(tt.service) {
				t.Errorf("exported %v, want %v", r.Exported, !r.Exported)
			}
			for k, wa := range e.Addrs {
				want, ok := tt.hints[k]
				if !ok {
					want = tt.hint
				}
				if got := wa.GetProtocolHint().GetProtocol(); got != want {
					t.Errorf("%s hint %s, want %s", k, got, want)
				}
				if wa.GetTargetPort() != 0 {
					t.Errorf("%s target port %d, want 0 (transparent)", k, wa.GetTargetPort())
				}
				if want, ok := tt.identity[k]; ok {
					if got := wa.GetTlsIdentity(); (got == nil) != (want == nil) || got.GetSpiffeId() != want.GetSpiffeId() || got.GetServerName() != want.GetServerName() {
						t.Errorf("%s identity %v, want %v", k, got, want)
					}
				}
				if want, ok := tt.zone[k]; ok && wa.GetZone() != want {
					t.Errorf("%s zone %q, want %q", k, wa.GetZone(), want)
				}
			}
		})
	}

	// Endpoint labels name the pod and its owner.
	wa := resolve(t, f.src, "books.demo:80", "").Endpoints.Addrs["10.244.0.11:8080"]
	want := map[string]string{"pod": "books-1", "namespace": "demo", "serviceaccount": "books", "replicaset": "books-7d9f", "deployment": "books"}
	for k, v := range want {
		if wa.GetMetricLabels()[k] != v {
			t.Errorf("labels %v, want %v", wa.GetMetricLabels(), want)
			break
		}
	}
	if l := resolve(t, f.src, "books.demo:80", "").Endpoints.Labels; l["service"] != "books" || l["namespace"] != "demo" {
		t.Errorf("set labels %v", l)
	}
	if f.src.Watched() != 0 {
		t.Errorf("%d topics still watched after every release", f.src.Watched())
	}
}

// waitFor re-resolves after every change notification until ok holds,
// failing after a bound. Notifications may be spurious (any event on a
// topic wakes it); what matters is that the awaited one comes.
func waitFor(t *testing.T, src *Source, path, what string, ok func(destination.Resolution) bool) destination.Resolution {
	t.Helper()
	a, err := authority.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for {
		r, ch, release := src.Resolve(a, "")
		if ok(r) {
			release()
			return r
		}
		select {
		case <-ch:
			release()
		case <-deadline:
			release()
			t.Fatalf("%s: no notification brought the expected answer; last %q", what, addrs(r.Endpoints))
		}
	}
}

func TestUpdates(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/cluster.yaml")...)
	ctx := context.Background()
	const books = "books.demo:80"

	// books-3 turns ready: both the name and the cluster IP streams see it.
	sl, err := f.client.DiscoveryV1().EndpointSlices("demo").Get(ctx, "books-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[2].Conditions.Ready = ptr(true)
	if _, err := f.client.DiscoveryV1().EndpointSlices("demo").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	three := func(r destination.Resolution) bool {
		return addrs(r.Endpoints) == "10.244.0.11:8080,10.244.0.12:8080,10.244.0.13:8080"
	}
	waitFor(t, f.src, books, "an endpoint turned ready", three)
	waitFor(t, f.src, "10.96.0.10:80", "an endpoint turned ready (cluster IP)", three)

	// books-2's node gets a zone label.
	n, _ := f.client.CoreV1().Nodes().Get(ctx, "node-b", metav1.GetOptions{})
	n.Labels = map[string]string{ZoneLabel: "zone-b"}
	if _, err := f.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, books, "a node zone changed", func(r destination.Resolution) bool {
		return r.Endpoints.Addrs["10.244.0.12:8080"].GetZone() == "zone-b"
	})

	// The service gets balancer annotations: carried verbatim, bounded.
	svc, _ := f.client.CoreV1().Services("demo").Get(ctx, "books", metav1.GetOptions{})
	svc.Annotations = map[string]string{k8slabels.AnnotationFailureAccrual: "consecutive:3", k8slabels.AnnotationSlowStart: strings.Repeat("9", 5000)}
	if _, err := f.client.CoreV1().Services("demo").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, books, "balancer annotations", func(r destination.Resolution) bool {
		b := r.Endpoints.Balancer
		return b.GetFailureAccrual() == "consecutive:3" && len(b.GetSlowStart()) == maxBalancerAnnotation
	})

	// books-2 loses its proxy: it is then reached in plain text.
	p, _ := f.client.CoreV1().Pods("demo").Get(ctx, "books-2", metav1.GetOptions{})
	p.Spec.InitContainers = nil
	if _, err := f.client.CoreV1().Pods("demo").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, books, "a pod was unmeshed", func(r destination.Resolution) bool {
		wa := r.Endpoints.Addrs["10.244.0.12:8080"]
		return wa != nil && wa.GetTlsIdentity() == nil
	})

	// The service is deleted: the destination no longer exists.
	if err := f.client.CoreV1().Services("demo").Delete(ctx, "books", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, books, "the service was deleted", func(r destination.Resolution) bool { return !r.Endpoints.Exists })
	waitFor(t, f.src, "10.96.0.10:80", "the service was deleted (cluster IP)", func(r destination.Resolution) bool { return !r.Endpoints.Exists })

	// A pod IP stream sees a pod take the IP.
	newPod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "late", Namespace: "demo", Annotations: map[string]string{k8slabels.AnnotationProxyVersion: "v1"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "late", NodeName: "node-a"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.0.99", PodIPs: []corev1.PodIP{{IP: "10.244.0.99"}}},
	}
	if _, err := f.client.CoreV1().Pods("demo").Create(ctx, newPod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, "10.244.0.99:8080", "a pod took the IP", func(r destination.Resolution) bool {
		return r.Endpoints.Addrs["10.244.0.99:8080"].GetTlsIdentity().GetSpiffeId() == "spiffe://cluster.local/ns/demo/sa/late"
	})
	if f.src.Watched() != 0 {
		t.Errorf("%d topics still watched after every release", f.src.Watched())
	}
}

func TestEndpointWaitsForItsPod(t *testing.T) {
	// An endpoint whose pod the cache has not seen is left out, not sent
	// without identity; it appears once the pod does.
	objs := loadFixture(t, "testdata/cluster.yaml")
	var kept []runtime.Object
	var books1 *corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && p.Name == "books-1" {
			books1 = p
			continue
		}
		kept = append(kept, o)
	}
	f := start(t, kept...)
	if got := addrs(resolve(t, f.src, "books.demo:80", "").Endpoints); got != "10.244.0.12:8080" {
		t.Fatalf("without its pod: %q", got)
	}
	if _, err := f.client.CoreV1().Pods("demo").Create(context.Background(), books1, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.src, "books.demo:80", "the pod appeared", func(r destination.Resolution) bool {
		return r.Endpoints.Addrs["10.244.0.11:8080"].GetTlsIdentity().GetSpiffeId() == "spiffe://cluster.local/ns/demo/sa/books"
	})
}

func TestPodChanged(t *testing.T) {
	base := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "a"}},
		Spec:       corev1.PodSpec{ServiceAccountName: "a", NodeName: "n"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1"},
	}
	tests := []struct {
		name   string
		mutate func(p *corev1.Pod)
		want   bool
	}{
		{"status condition only", func(p *corev1.Pod) {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}, false},
		{"ip", func(p *corev1.Pod) { p.Status.PodIP = "10.0.0.2" }, true},
		{"phase", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }, true},
		{"meshed", func(p *corev1.Pod) { p.Annotations = map[string]string{k8slabels.AnnotationProxyVersion: "v"} }, true},
		{"opaque ports", func(p *corev1.Pod) { p.Annotations = map[string]string{k8slabels.AnnotationOpaquePorts: "1"} }, true},
		{"label", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "b"} }, true},
		{"deleting", func(p *corev1.Pod) { p.DeletionTimestamp = &metav1.Time{} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base.DeepCopy()
			tt.mutate(p)
			if got := podChanged(base, p); got != tt.want {
				t.Fatalf("podChanged = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestProtocolHint(t *testing.T) {
	for in, want := range map[string]apiv1.ProtocolHint_Protocol{
		"http": apiv1.ProtocolHint_HTTP1, "HTTP": apiv1.ProtocolHint_HTTP1, "kubernetes.io/h2c": apiv1.ProtocolHint_HTTP2,
		"grpc": apiv1.ProtocolHint_GRPC, "opaque": apiv1.ProtocolHint_OPAQUE, "tcp": apiv1.ProtocolHint_OPAQUE,
		"https": apiv1.ProtocolHint_UNKNOWN, "kubernetes.io/ws": apiv1.ProtocolHint_UNKNOWN, "": apiv1.ProtocolHint_UNKNOWN,
	} {
		if got := protocolHint(in); got != want {
			t.Errorf("protocolHint(%q) = %s, want %s", in, got, want)
		}
	}
}

func ptr[T any](v T) *T { return &v }
