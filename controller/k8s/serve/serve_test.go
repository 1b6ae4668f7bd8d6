package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sort"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// mtls makes a throwaway CA, the controller's serving config and a client
// config that accepts only the controller's identity.
func mtls(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	now := time.Now()
	root, rootKey, err := pki.NewRoot("test anchor", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	is, err := pki.NewIssuer(root, rootKey, "test issuer", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	id := identity.Controller("cluster.local")
	leaf, err := is.Sign(key.Public(), id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: is.ChainDER(leaf), PrivateKey: key, Leaf: leaf}}}
	client = &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The certificate names a SPIFFE ID, not a host: verify it
		// exactly, as proxies do.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, pool, x509.ExtKeyUsageServerAuth, id, time.Now())
			return err
		},
	}
	return server, client
}

// TestServeFake runs the scenario against client-go's fake clientset.
func TestServeFake(t *testing.T) {
	client := fake.NewClientset()
	// The fake cannot replay a watch from a resource version: count the
	// four watches so objects are created only once they are all open.
	watching := make(chan struct{}, 8)
	client.PrependWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace())
		watching <- struct{}{}
		return true, w, err
	})
	scenario(t, client, "demo", func(t *testing.T) {
		for range 4 {
			select {
			case <-watching:
			case <-time.After(30 * time.Second):
				t.Fatal("informers did not start watching")
			}
		}
	})
}

// TestServeCluster runs the scenario against a real API server, such as the
// one `make cluster-up` starts (test/cluster/).
func TestServeCluster(t *testing.T) {
	client, err := ClientFromKubeconfig(clusterKubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("trellis-test-%d", rand.Uint32())
	ctx := context.Background()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	scenario(t, client, ns, func(*testing.T) {})
}

// scenario creates a node, a service account, two pods (one meshed) with
// their IPs, a selector-less Service and its EndpointSlice, starts the
// controller on the API and follows a Destination.Get stream through a
// readiness change.
func scenario(t *testing.T, client kubernetes.Interface, ns string, afterStart func(*testing.T)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serverTLS, clientTLS := mtls(t)
	c, err := Start(ctx, Config{
		Client: client, TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel()
		if err := c.Wait(); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	afterStart(t)
	resp, err := http.Get("http://" + c.AdminAddr() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready %d after Start", resp.StatusCode)
	}

	// Objects. The node has no kubelet: the pods bound to it never run,
	// their status is written here, as a kubelet would.
	node := ns + "-node"
	prefix := fmt.Sprintf("10.250.%d.", rand.IntN(250))
	must(t, create(func() error {
		_, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{corev1.LabelTopologyZone: "zone-t"}}}, metav1.CreateOptions{})
		return err
	}))
	t.Cleanup(func() { _ = client.CoreV1().Nodes().Delete(context.Background(), node, metav1.DeleteOptions{}) })
	must(t, create(func() error {
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "books"}}, metav1.CreateOptions{})
		return err
	}))
	for i, meshed := range []bool{true, false} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("books-%d", i+1), Namespace: ns, Labels: map[string]string{"app": "books"}},
			Spec: corev1.PodSpec{
				ServiceAccountName: "books", NodeName: node, AutomountServiceAccountToken: new(false),
				Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/books:0"}},
			},
		}
		if meshed {
			p.Annotations = map[string]string{"trellis.io/proxy-version": "test"}
		}
		p, err := client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
		must(t, err)
		ip := prefix + fmt.Sprint(i+1)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		_, err = client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
		must(t, err)
	}
	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "books", Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, AppProtocol: new("http")}}},
	}, metav1.CreateOptions{})
	must(t, err)
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "books-1", Namespace: ns, Labels: map[string]string{
			discoveryv1.LabelServiceName: "books", discoveryv1.LabelManagedBy: "trellis-test",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080)), Protocol: new(corev1.ProtocolTCP), AppProtocol: new("http")}},
	}
	for i := range 2 {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{prefix + fmt.Sprint(i+1)},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)},
			NodeName:   new(node),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: fmt.Sprintf("books-%d", i+1)},
		})
	}
	slice, err = client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	must(t, err)

	// The stream.
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	must(t, err)
	defer conn.Close()
	dst := apiv1.NewDestinationClient(conn)
	paths := []string{"books." + ns + ".svc.cluster.local:80"}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != "None" {
		paths = append(paths, ip+":80") // the fake allocates no cluster IP
	}
	for _, path := range paths {
		t.Run(path, func(t *testing.T) {
			sctx, scancel := context.WithTimeout(ctx, 60*time.Second)
			defer scancel()
			s, err := dst.Get(sctx, &apiv1.GetDestination{Path: path})
			must(t, err)
			// The objects were created just now: wait until both endpoints
			// are in (earlier messages may show fewer).
			got := map[string]*apiv1.WeightedAddr{}
			for len(got) < 2 {
				u, err := s.Recv()
				must(t, err)
				for _, a := range u.GetAdd().GetAddrs() {
					got[a.GetAddr().GetIp()] = a
				}
				for _, a := range u.GetRemove().GetAddrs() {
					delete(got, a.GetIp())
				}
			}
			meshed, plain := got[prefix+"1"], got[prefix+"2"]
			if meshed == nil || plain == nil {
				t.Fatalf("endpoints %v", keys(got))
			}
			wantID := "spiffe://cluster.local/ns/" + ns + "/sa/books"
			if meshed.GetTlsIdentity().GetSpiffeId() != wantID || plain.GetTlsIdentity() != nil {
				t.Fatalf("identities: meshed %v, plain %v", meshed.GetTlsIdentity(), plain.GetTlsIdentity())
			}
			for _, a := range []*apiv1.WeightedAddr{meshed, plain} {
				if a.GetAddr().GetPort() != 8080 || a.GetTargetPort() != 0 || a.GetZone() != "zone-t" || a.GetProtocolHint().GetProtocol() != apiv1.ProtocolHint_HTTP1 {
					t.Fatalf("endpoint %v", a)
				}
			}
		})
	}

	// books-2 turns unready: an open stream gets its removal.
	s, err := dst.Get(ctx, &apiv1.GetDestination{Path: paths[0]})
	must(t, err)
	first, err := s.Recv()
	must(t, err)
	if n := len(first.GetAdd().GetAddrs()); n != 2 {
		t.Fatalf("first message %v", first)
	}
	slice.Endpoints[1].Conditions.Ready = new(false)
	_, err = client.DiscoveryV1().EndpointSlices(ns).Update(ctx, slice, metav1.UpdateOptions{})
	must(t, err)
	u, err := s.Recv()
	must(t, err)
	if rm := u.GetRemove().GetAddrs(); len(rm) != 1 || rm[0].GetIp() != prefix+"2" {
		t.Fatalf("after books-2 turned unready: %v", u)
	}
}

// create runs a create call, accepting an object left by an earlier run.
func create(f func() error) error {
	if err := f(); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func keys(m map[string]*apiv1.WeightedAddr) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
