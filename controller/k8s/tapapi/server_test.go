package tapapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	appsv1 "k8s.io/api/apps/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/tapfan"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const td = "cluster.local"

// mesh is a trust domain's issuer: the controller's certificate and the
// proxies' come from it, as in a cluster.
type mesh struct {
	issuer *pki.Issuer
	pool   *x509.CertPool
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	now := time.Now()
	root, rootKey, err := pki.NewRoot("root", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, rootKey, "issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &mesh{issuer: is, pool: pool}
}

func (m *mesh) cert(t *testing.T, id identity.ID) *tls.Certificate {
	t.Helper()
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := m.issuer.Sign(key.Public(), id, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: m.issuer.ChainDER(leaf), PrivateKey: key, Leaf: leaf}
}

// fakeProxy is a real gRPC Tap server over mTLS that, like a proxy,
// accepts only the controller's identity and streams one request's three
// events every few milliseconds.
type fakeProxy struct {
	apiv1.UnimplementedTapServer
	addr   string
	active atomic.Int32
	opened atomic.Int32
	got    atomic.Pointer[apiv1.ObserveRequest]
}

func (p *fakeProxy) Observe(req *apiv1.ObserveRequest, s grpc.ServerStreamingServer[apiv1.TapEvent]) error {
	p.active.Add(1)
	p.opened.Add(1)
	defer p.active.Add(-1)
	p.got.Store(req)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for id := uint64(1); ; id++ {
		select {
		case <-s.Context().Done():
			return nil
		case <-tick.C:
		}
		for _, ev := range []*apiv1.TapEvent{
			{Id: id, Direction: "inbound", Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: "GET", Path: "/books"}}},
			{Id: id, Direction: "inbound", Event: &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: 200}}},
			{Id: id, Direction: "inbound", Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{SinceRequestInit: durationpb.New(time.Millisecond), GrpcStatus: -1}}},
		} {
			if err := s.Send(ev); err != nil {
				return err
			}
		}
	}
}

func startProxy(t *testing.T, m *mesh, id identity.ID) *fakeProxy {
	t.Helper()
	ctrl := identity.Controller(td)
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{*m.cert(t, id)},
		ClientAuth: tls.RequireAnyClientCert,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, m.pool, x509.ExtKeyUsageClientAuth, ctrl, time.Now())
			return err
		},
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProxy{addr: ln.Addr().String()}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	apiv1.RegisterTapServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return p
}

func meshedPod(name, sa, addr string, owner types.UID) *corev1.Pod {
	_, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{"app": "web"},
			OwnerReferences: []metav1.OwnerReference{{UID: owner, Controller: &yes, Kind: "ReplicaSet", Name: "web-rs"}}},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{
			{Name: "app"},
			{Name: k8slabels.ProxyContainerName, Ports: []corev1.ContainerPort{{Name: TapPortName, ContainerPort: int32(n)}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
	}
}

// rbac answers SubjectAccessReviews from a table of user -> verbs.
func rbac(c *fake.Clientset, allowed map[string][]string, seen *atomic.Value) {
	c.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview).DeepCopy()
		seen.Store(sar.Spec)
		for _, v := range allowed[sar.Spec.User] {
			ra := sar.Spec.ResourceAttributes
			if v == ra.Verb && ra.Group == Group && (ra.Subresource == Subresource || ra.Resource == Subresource) {
				sar.Status.Allowed = true
			}
		}
		return true, sar, nil
	})
}

type staticAuth struct{ rh *RequestHeader }

func (s staticAuth) Get(context.Context) (*RequestHeader, error) { return s.rh, nil }

type fixture struct {
	url      string
	front    *tls.Certificate
	stranger *tls.Certificate
	proxies  []*fakeProxy
	sar      *atomic.Value
	pool     *x509.CertPool
	srv      *Server
}

func newFixture(t *testing.T, maxPerUser int) *fixture {
	t.Helper()
	m := newMesh(t)
	web := identity.ID{TrustDomain: td, Namespace: "demo", ServiceAccount: "web"}
	good1, good2 := startProxy(t, m, web), startProxy(t, m, web)
	// A pod whose proxy proves another identity than its service
	// account's: the controller must not tap it.
	impostor := startProxy(t, m, identity.ID{TrustDomain: td, Namespace: "demo", ServiceAccount: "books"})
	deployUID, rsUID := types.UID("d-1"), types.UID("rs-1")
	yes := true
	objs := []runtime.Object{
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "demo", UID: deployUID},
			Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
		&appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-rs", Namespace: "demo", UID: rsUID,
			OwnerReferences: []metav1.OwnerReference{{UID: deployUID, Controller: &yes}}}},
		meshedPod("web-1", "web", good1.addr, rsUID), meshedPod("web-2", "web", good2.addr, rsUID), meshedPod("web-3", "web", impostor.addr, rsUID),
		// Same labels, another owner: not the deployment's.
		meshedPod("other", "web", good1.addr, "rs-other"),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}},
	}
	client := fake.NewClientset(objs...)
	seen := &atomic.Value{}
	rbac(client, map[string][]string{"watcher": {VerbWatch}, "capturer": {VerbWatch, VerbCapture}}, seen)

	front := newTestCA(t, "front-proxy-ca")
	ctrlCert := m.cert(t, identity.Controller(td))
	srv := &Server{
		Client: client, TrustDomain: td, Log: slog.New(slog.DiscardHandler), MaxPerUser: maxPerUser,
		Auth: staticAuth{&RequestHeader{CAs: front.pool, AllowedNames: []string{"front-proxy-client"},
			UserHeaders: []string{"X-Remote-User"}, GroupHeaders: []string{"X-Remote-Group"}}},
		Dialer: &tapfan.Dialer{ClientCertificate: func() (*tls.Certificate, error) { return ctrlCert, nil }, Roots: func() *x509.CertPool { return m.pool }},
	}
	if err := srv.Register(prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	return &fixture{
		url: hs.URL, front: ptr(front.issue(t, "front-proxy-client", x509.ExtKeyUsageClientAuth)),
		stranger: ptr(newTestCA(t, "cluster-ca").issue(t, "front-proxy-client", x509.ExtKeyUsageClientAuth)),
		proxies:  []*fakeProxy{good1, good2, impostor}, sar: seen, pool: pool, srv: srv,
	}
}

func (f *fixture) do(t *testing.T, ctx context.Context, cert *tls.Certificate, user, path, body string) *http.Response {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.pool}}
	if cert != nil {
		tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
	}
	method := "POST"
	if body == "" {
		method = "GET"
	}
	req, _ := http.NewRequestWithContext(ctx, method, f.url+path, strings.NewReader(body))
	if user != "" {
		req.Header.Set("X-Remote-User", user)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

const deployTap = "/apis/tap.trellis.io/v1alpha1/watch/namespaces/demo/deployments/web/tap"

func statusMessage(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	var st metav1.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("%d: not a Status: %v", resp.StatusCode, err)
	}
	return st.Message
}

// oversized is an ObserveRequest whose every match field is as long as
// allowed: together past the proxies' message size.
func oversized() string {
	v := strings.Repeat("a", 4096)
	return `{"match":{"authority":"` + v + `","pathPrefix":"/` + v[1:] + `","method":"` + v + `","fromIdentity":"` + v + `","toIdentity":"` + v + `"}}`
}

func TestRefusals(t *testing.T) {
	f := newFixture(t, 0)
	ctx := t.Context()
	for _, tc := range []struct {
		name     string
		cert     *tls.Certificate
		user     string
		path     string
		body     string
		code     int
		contains string
	}{
		{"no client certificate", nil, "capturer", deployTap, "{}", 401, "unauthenticated"},
		{"certificate of another CA", f.stranger, "capturer", deployTap, "{}", 401, "unauthenticated"},
		{"no watch", f.front, "nobody", deployTap, "{}", 403, `cannot watch resource "deployments/tap"`},
		{"watch but no capture", f.front, "watcher", deployTap, `{"bodyBytes":1024}`, 403, "cannot capture"},
		{"body cap", f.front, "capturer", deployTap, `{"bodyBytes":70000}`, 400, "bodyBytes"},
		{"not JSON", f.front, "capturer", deployTap, `limit=3`, 400, "ObserveRequest"},
		// What every proxy would refuse: a 400 here, not a 200 without events.
		{"bad direction", f.front, "capturer", deployTap, `{"match":{"direction":"sideways"}}`, 400, "match.direction"},
		{"long match", f.front, "capturer", deployTap, `{"match":{"pathPrefix":"/` + strings.Repeat("a", 4096) + `"}}`, 400, "match.pathPrefix"},
		{"too large", f.front, "capturer", deployTap, oversized(), 400, "bytes encoded"},
		{"unknown resource", f.front, "capturer", "/apis/tap.trellis.io/v1alpha1/watch/namespaces/demo/services/web/tap", "{}", 404, "no such path"},
		{"missing deployment", f.front, "capturer", "/apis/tap.trellis.io/v1alpha1/watch/namespaces/demo/deployments/nope/tap", "{}", 404, "deployments/nope in namespace demo not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := f.do(t, ctx, tc.cert, tc.user, tc.path, tc.body)
			msg := statusMessage(t, resp)
			if resp.StatusCode != tc.code || !strings.Contains(msg, tc.contains) {
				t.Errorf("%d %q; want %d containing %q", resp.StatusCode, msg, tc.code, tc.contains)
			}
		})
	}
	if n := f.proxies[0].opened.Load() + f.proxies[1].opened.Load(); n != 0 {
		t.Errorf("refused taps opened %d proxy streams", n)
	}
	for result, want := range map[string]float64{"unauthenticated": 2, "forbidden": 2, "bad_request": 5, "not_found": 2, "ok": 0} {
		if got := testutil.ToFloat64(f.srv.requests.WithLabelValues(result)); got != want {
			t.Errorf("trellis_controller_tap_requests_total{result=%q} = %g, want %g", result, got, want)
		}
	}
}

func TestDiscovery(t *testing.T) {
	f := newFixture(t, 0)
	for path, kind := range map[string]string{"/apis": "APIGroupList", "/apis/tap.trellis.io": "APIGroup", "/apis/tap.trellis.io/v1alpha1": "APIResourceList"} {
		resp := f.do(t, t.Context(), nil, "", path, "")
		var doc struct {
			Kind      string `json:"kind"`
			Resources []struct {
				Name  string   `json:"name"`
				Verbs []string `json:"verbs"`
			} `json:"resources"`
		}
		err := json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || doc.Kind != kind {
			t.Errorf("GET %s: %d %q %v; want 200 %s", path, resp.StatusCode, doc.Kind, err, kind)
		}
		if kind == "APIResourceList" && (len(doc.Resources) != len(tapResources)+1 || doc.Resources[1].Name != "pods/tap") {
			t.Errorf("resources %+v", doc.Resources)
		}
	}
}

// TestTapStreamsEveryPod: events of both of the deployment's good pods,
// with pod and namespace, the limit honoured, and nothing from the pod
// whose proxy proves the wrong identity.
func TestTapStreamsEveryPod(t *testing.T) {
	f := newFixture(t, 0)
	resp := f.do(t, t.Context(), f.front, "capturer", deployTap, `{"limit":40,"bodyBytes":16,"match":{"pathPrefix":"/books"}}`)
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, statusMessage(t, resp))
	}
	pods, ends := map[string]int{}, 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		ev := &apiv1.TapEvent{}
		if err := protojson.Unmarshal(sc.Bytes(), ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if ev.GetNamespace() != "demo" {
			t.Errorf("namespace %q", ev.GetNamespace())
		}
		pods[ev.GetPod()]++
		if ev.GetResponseEnd() != nil {
			ends++
		}
	}
	if ends != 40 {
		t.Errorf("%d requests ended; want the limit, 40", ends)
	}
	if pods["web-1"] == 0 || pods["web-2"] == 0 || pods["web-3"] != 0 || pods["other"] != 0 {
		t.Errorf("events per pod %v; want web-1 and web-2 only", pods)
	}
	if got := f.proxies[0].got.Load(); got.GetMatch().GetPathPrefix() != "/books" || got.GetBodyBytes() != 16 {
		t.Errorf("the proxy was asked %v", got)
	}
	if spec := f.sar.Load().(authzv1.SubjectAccessReviewSpec); spec.ResourceAttributes.Name != "web" || spec.ResourceAttributes.Resource != "deployments" {
		t.Errorf("last SubjectAccessReview %+v", spec.ResourceAttributes)
	}
	waitClosed(t, f.proxies)
}

func waitClosed(t *testing.T, proxies []*fakeProxy) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		n := int32(0)
		for _, p := range proxies {
			n += p.active.Load()
		}
		if n == 0 {
			t.Logf("proxy streams closed %s after", time.Since(start).Round(time.Millisecond))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("proxy streams still open 10s after the tap ended")
}

// TestClientGoneCancelsProxies also checks the per-user cap.
func TestClientGoneCancelsProxies(t *testing.T) {
	f := newFixture(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	resp := f.do(t, ctx, f.front, "watcher", deployTap, `{}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, statusMessage(t, resp))
	}
	if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	second := f.do(t, t.Context(), f.front, "watcher", deployTap, `{}`)
	if msg := statusMessage(t, second); second.StatusCode != 429 || !strings.Contains(msg, "at most 1 per user") {
		t.Errorf("second tap: %d %q; want 429", second.StatusCode, msg)
	}
	cancel()
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitClosed(t, f.proxies)
}
