package serve

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	admissionregv1 "k8s.io/api/admissionregistration/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/ca"
	identitysvc "github.com/trellis-mesh/trellis/controller/identity"
	"github.com/trellis-mesh/trellis/controller/k8s/saevents"
	"github.com/trellis-mesh/trellis/controller/k8s/tokenreview"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

// testNamespace creates a namespace with labels on the real API server
// and deletes it after the test.
func testNamespace(t *testing.T, client kubernetes.Interface, labels, annotations map[string]string) string {
	t.Helper()
	ns := fmt.Sprintf("trellis-test-%d", rand.Uint32())
	_, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels, Annotations: annotations},
	}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return ns
}

// TestServeClusterIdentity runs Identity.Certify through the TokenReview
// path of a real API server: a token from the TokenRequest API for the
// audience identity.trellis.io gets a certificate for its ServiceAccount;
// a token for another audience, a token asking for another
// ServiceAccount's identity and garbage are refused.
func TestServeClusterIdentity(t *testing.T) {
	client, err := ClientFromKubeconfig(clusterKubeconfig(t))
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := testNamespace(t, client, nil, nil)
	saUID := map[string]string{}
	for _, sa := range []string{"books", "other"} {
		created, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
		must(t, err)
		saUID[sa] = string(created.UID)
	}
	token := func(audience string) []byte {
		tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "books", &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: new(int64(600))},
		}, metav1.CreateOptions{})
		must(t, err)
		return []byte(tr.Status.Token)
	}
	good, wrongAudience := token(tokenreview.Audience), token("https://kubernetes.default.svc.cluster.local")

	authority, err := ca.LoadOrCreate(t.TempDir(), time.Now(), ca.Options{Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	serverTLS, clientTLS := mtls(t)
	m := metrics.New()
	rec, err := saevents.Start(ctx, client)
	must(t, err)
	defer rec.Shutdown()
	c, err := Start(ctx, Config{
		Client: client, TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", Metrics: m,
		Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
		Register: func(srv *grpc.Server, env Env) {
			auth := TokenReviewAuth{&tokenreview.Authenticator{Client: env.Client.AuthenticationV1(), TrustDomain: "cluster.local"}}
			apiv1.RegisterIdentityServer(srv, &identitysvc.Service{Auth: auth, CA: authority, Metrics: env.Metrics, Log: slog.New(slog.DiscardHandler), Events: rec})
		},
	})
	must(t, err)
	defer func() {
		cancel()
		if err := c.Wait(); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	must(t, err)
	defer conn.Close()
	idc := apiv1.NewIdentityClient(conn)

	books := identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "books"}
	other := identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "other"}
	key, err := pki.GenerateKey()
	must(t, err)
	certify := func(id identity.ID, tok []byte) (*apiv1.CertifyResponse, error) {
		csr, err := pki.NewCSR(key, id)
		must(t, err)
		return idc.Certify(ctx, &apiv1.CertifyRequest{Identity: id.String(), Token: tok, CertificateSigningRequest: csr})
	}

	resp, err := certify(books, good)
	if err != nil {
		t.Fatalf("Certify with a projected token for %s: %v", tokenreview.Audience, err)
	}
	anchors := x509.NewCertPool()
	for _, der := range resp.GetTrustAnchors() {
		a, err := x509.ParseCertificate(der)
		must(t, err)
		anchors.AddCert(a)
	}
	if _, err := pki.Verify(resp.GetChain(), anchors, x509.ExtKeyUsageClientAuth, books, time.Now()); err != nil {
		t.Fatalf("issued chain does not verify as %s against the returned anchors: %v", books, err)
	}

	for _, tc := range []struct {
		name   string
		id     identity.ID
		token  []byte
		code   codes.Code
		reason string
	}{
		{"wrong audience", books, wrongAudience, codes.Unauthenticated, metrics.ReasonBadToken},
		{"another service account", other, good, codes.PermissionDenied, metrics.ReasonIdentityMismatch},
		{"garbage", books, []byte("not-a-token"), codes.Unauthenticated, metrics.ReasonBadToken},
		{"another trust domain", identity.ID{TrustDomain: "example.org", Namespace: ns, ServiceAccount: "books"}, good, codes.PermissionDenied, metrics.ReasonIdentityMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before float64
			if n, err := counterOf(m, tc.reason); err == nil {
				before = n
			}
			_, err := certify(tc.id, tc.token)
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
			n, err := counterOf(m, tc.reason)
			must(t, err)
			if n != before+1 {
				t.Errorf("refused{reason=%s} went %v -> %v", tc.reason, before, n)
			}
		})
	}

	// The decisions are Events on the ServiceAccounts: the issuance on
	// books with its UID (so kubectl describe finds it), the refusal of a
	// books token asking for "other" on other, which is whose owners care.
	want := []struct{ sa, typ, reason, uid, note string }{
		{"books", corev1.EventTypeNormal, saevents.ReasonIssued, saUID["books"], "issued " + books.String()},
		{"books", corev1.EventTypeWarning, saevents.ReasonRefused, "", "(" + metrics.ReasonBadToken + ")"},
		{"other", corev1.EventTypeWarning, saevents.ReasonRefused, "", "(" + metrics.ReasonIdentityMismatch + ")"},
	}
	var seen []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		evs, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		must(t, err)
		seen = seen[:0]
		missing := 0
		for _, w := range want {
			found := false
			for _, e := range evs.Items {
				if e.Regarding.Kind == "ServiceAccount" && e.Regarding.Name == w.sa && e.Type == w.typ && e.Reason == w.reason &&
					string(e.Regarding.UID) == w.uid && strings.Contains(e.Note, w.note) && e.ReportingController == saevents.ReportingController {
					found = true
				}
			}
			if !found {
				missing++
			}
		}
		for _, e := range evs.Items {
			seen = append(seen, fmt.Sprintf("%s %s/%s uid=%q %s: %s", e.Type, e.Regarding.Kind, e.Regarding.Name, e.Regarding.UID, e.Reason, e.Note))
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d expected events missing; events in %s:\n%s", missing, ns, strings.Join(seen, "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, e := range seen {
		if strings.Contains(e, "not-a-token") {
			t.Errorf("an event holds the token: %s", e)
		}
	}
}

func counterOf(m *metrics.Metrics, reason string) (float64, error) {
	mfs, err := m.Registry.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "trellis_controller_certificates_refused_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return s.GetCounter().GetValue(), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no refused counter for %s", reason)
}

// TestServeClusterWebhook has the real API server call the injector
// webhook (a MutatingWebhookConfiguration with a URL on loopback, scoped
// to a test namespace by label): a pod created in a namespace annotated
// trellis.io/inject=enabled is stored with the proxy and the trust anchors.
func TestServeClusterWebhook(t *testing.T) {
	client, err := ClientFromKubeconfig(clusterKubeconfig(t))
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	marker := fmt.Sprintf("%d", rand.Uint32())
	ns := testNamespace(t, client, map[string]string{"trellis-test": marker}, map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled})

	dir := t.TempDir()
	certPEM, keyPEM, _ := keyPair(t, "webhook")
	must(t, os.WriteFile(filepath.Join(dir, TLSCertFile), certPEM, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, TLSKeyFile), keyPEM, 0o600))
	anchors := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("test anchors")}))
	serverTLS, _ := mtls(t)
	c, err := Start(ctx, Config{
		Client: client, TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
		WebhookAddr: "127.0.0.1:0", WebhookTLSDir: dir,
		Webhook: func(lookup NamespaceAnnotations) http.Handler {
			return inject.NewHandler(inject.Config{NamespaceAnnotations: lookup, TrustAnchorsPEM: anchors, Logger: slog.New(slog.DiscardHandler)})
		},
	})
	must(t, err)
	defer func() {
		cancel()
		if err := c.Wait(); err != nil {
			t.Errorf("controller: %v", err)
		}
	}()

	url := "https://" + c.WebhookAddr() + inject.Path
	fail := admissionregv1.Fail
	none := admissionregv1.SideEffectClassNone
	// The API server calls mutating webhooks in the order of their
	// configuration names: "0-" puts this one before an installed
	// trellis-injector, which then sees the pod already injected.
	whName := "0-trellis-test-" + marker
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: whName},
		Webhooks: []admissionregv1.MutatingWebhook{{
			Name:                    "inject.trellis.io",
			ClientConfig:            admissionregv1.WebhookClientConfig{URL: &url, CABundle: certPEM},
			Rules:                   []admissionregv1.RuleWithOperations{{Operations: []admissionregv1.OperationType{admissionregv1.Create}, Rule: admissionregv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"trellis-test": marker}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          new(int32(10)),
		}},
	}, metav1.CreateOptions{})
	must(t, err)
	t.Cleanup(func() {
		_ = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), whName, metav1.DeleteOptions{})
	})

	// Without kube-controller-manager (a bare API server) nobody makes
	// the namespace's default ServiceAccount.
	must(t, create(func() error {
		_, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		return err
	}))

	// The API server picks up a new webhook configuration asynchronously:
	// retry until a created pod comes back injected.
	var pod *corev1.Pod
	for i := 0; ; i++ {
		p, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("books-%d", i)},
			Spec: corev1.PodSpec{
				// Bound to no real node: nothing ever runs it.
				NodeName:                     "trellis-test-nowhere",
				AutomountServiceAccountToken: new(false),
				Containers:                   []corev1.Container{{Name: "app", Image: "registry.invalid/books:0"}},
			},
		}, metav1.CreateOptions{})
		if err == nil && p.Annotations[k8slabels.AnnotationProxyVersion] != "" {
			pod = p
			break
		}
		if err != nil {
			t.Logf("create pod: %v", err)
		}
		if ctx.Err() != nil {
			t.Fatal("no injected pod before the deadline")
		}
		time.Sleep(500 * time.Millisecond)
	}
	names := func(cs []corev1.Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return out
	}
	all := append(names(pod.Spec.InitContainers), names(pod.Spec.Containers)...)
	if !slices.Contains(all, k8slabels.ProxyContainerName) || !slices.Contains(all, k8slabels.InitContainerName) {
		t.Fatalf("stored pod has containers %v", all)
	}
	if pod.Annotations[k8slabels.AnnotationTrustAnchors] != anchors {
		t.Fatalf("trust anchors annotation %q", pod.Annotations[k8slabels.AnnotationTrustAnchors])
	}
}
