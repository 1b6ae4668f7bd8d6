package serve

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// keyPair makes a self-signed serving certificate for 127.0.0.1.
func keyPair(t *testing.T, cn string) (certPEM, keyPEM []byte, cert *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), cert
}

// writeSecretDir writes a key pair the way the kubelet updates a Secret
// volume: files in a fresh timestamped directory, the ..data symlink
// swapped to it atomically, tls.crt and tls.key linking through ..data.
func writeSecretDir(t *testing.T, dir string, n int, certPEM, keyPEM []byte) {
	t.Helper()
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", n, n)
	must(t, os.Mkdir(filepath.Join(dir, ts), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, ts, TLSCertFile), certPEM, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, ts, TLSKeyFile), keyPEM, 0o600))
	tmp := filepath.Join(dir, "..data_tmp")
	must(t, os.Symlink(ts, tmp))
	must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	for _, f := range []string{TLSCertFile, TLSKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); os.IsNotExist(err) {
			must(t, os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)))
		}
	}
}

// TestServeWebhook runs the controller with the injector webhook on the
// fake clientset: a pod in a namespace annotated for injection gets a
// patch over TLS, one elsewhere is left alone, the serving key pair
// follows a Secret update (and survives a bad one), and the default
// policy is served on the gRPC server.
func TestServeWebhook(t *testing.T) {
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "plain"}},
	)
	dir := t.TempDir()
	cert1, key1, leaf1 := keyPair(t, "webhook-1")
	writeSecretDir(t, dir, 1, cert1, key1)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serverTLS, clientTLS := mtls(t)
	c, err := Start(ctx, Config{
		Client: client, TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
		WebhookAddr: "127.0.0.1:0", WebhookTLSDir: dir,
		Webhook: func(ns NamespaceAnnotations) http.Handler {
			return inject.NewHandler(inject.Config{NamespaceAnnotations: ns, Logger: slog.New(slog.DiscardHandler), TrustAnchorsPEM: "anchors"})
		},
		Register: func(srv *grpc.Server, env Env) {
			apiv1.RegisterPolicyServer(srv, &policy.Service{Source: DefaultPolicy{}, Metrics: env.Metrics, Log: env.Log, Done: env.Done})
		},
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
	if c.WebhookAddr() == "" {
		t.Fatal("no webhook address")
	}

	// post sends a pod CREATE review, trusting only roots, and returns
	// the response and the certificate the server showed.
	post := func(t *testing.T, roots *x509.Certificate, ns string) (*admissionv1.AdmissionResponse, *x509.Certificate) {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(roots)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
		defer tr.CloseIdleConnections()
		pod := &corev1.Pod{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
			ObjectMeta: metav1.ObjectMeta{Name: "books", Namespace: ns},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "books"}}},
		}
		raw, err := json.Marshal(pod)
		must(t, err)
		review := admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Request: &admissionv1.AdmissionRequest{
				UID: types.UID("uid-" + ns), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
				Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: ns,
				Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
			},
		}
		body, err := json.Marshal(review)
		must(t, err)
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Post("https://"+c.WebhookAddr()+inject.Path, "application/json", bytes.NewReader(body))
		must(t, err)
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		must(t, err)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", resp.Status, out)
		}
		var got admissionv1.AdmissionReview
		must(t, json.Unmarshal(out, &got))
		if got.Response == nil || got.Response.UID != review.Request.UID {
			t.Fatalf("response %s", out)
		}
		return got.Response, resp.TLS.PeerCertificates[0]
	}

	resp, _ := post(t, leaf1, "shop")
	if !resp.Allowed || !strings.Contains(string(resp.Patch), k8slabels.ProxyContainerName) || !strings.Contains(string(resp.Patch), "anchors") {
		t.Fatalf("pod in an injected namespace: allowed %v patch %s", resp.Allowed, resp.Patch)
	}
	if resp, _ := post(t, leaf1, "plain"); !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("pod in a plain namespace: allowed %v patch %s", resp.Allowed, resp.Patch)
	}

	// A Secret update: the next handshake shows the new certificate.
	cert2, key2, leaf2 := keyPair(t, "webhook-2")
	writeSecretDir(t, dir, 2, cert2, key2)
	if _, shown := post(t, leaf2, "plain"); shown.Subject.CommonName != "webhook-2" {
		t.Fatalf("after the update the server shows %s", shown.Subject.CommonName)
	}
	// A bad update (key of another pair) is refused and counted; the
	// last good pair keeps serving.
	_, key3, _ := keyPair(t, "webhook-3")
	writeSecretDir(t, dir, 3, cert2, key3)
	if _, shown := post(t, leaf2, "plain"); shown.Subject.CommonName != "webhook-2" {
		t.Fatalf("after a bad update the server shows %s", shown.Subject.CommonName)
	}
	if n := counterValue(t, c, "trellis_controller_webhook_tls_reload_errors_total"); n != 1 {
		t.Errorf("reload errors %v, want 1", n)
	}

	// The default policy on the gRPC server.
	conn, err := grpc.NewClient(c.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(clientTLS)))
	must(t, err)
	defer conn.Close()
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	defer scancel()
	s, err := apiv1.NewPolicyClient(conn).WatchInbound(sctx, &apiv1.InboundPolicyRequest{Workload: "spiffe://cluster.local/ns/shop/sa/books", Port: 8080})
	must(t, err)
	// This client proves no identity: the policy service refuses it
	// (controller/policy's tests cover the answers).
	if p, err := s.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("policy watch without a client certificate: %v, %v; want PermissionDenied", p, err)
	}
}

// TestServeWebhookBadKeyPair: a controller whose webhook key pair is
// missing does not start.
func TestServeWebhookBadKeyPair(t *testing.T) {
	serverTLS, _ := mtls(t)
	_, err := Start(context.Background(), Config{
		Client: fake.NewClientset(), TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		WebhookAddr: "127.0.0.1:0", WebhookTLSDir: t.TempDir(),
		Webhook: func(NamespaceAnnotations) http.Handler { return http.NotFoundHandler() },
	})
	if err == nil || !strings.Contains(err.Error(), TLSCertFile) {
		t.Fatalf("got %v, want an error naming %s", err, TLSCertFile)
	}
}

func counterValue(t *testing.T, c *Controller, name string) float64 {
	t.Helper()
	mfs, err := c.Metrics.Registry.Gather()
	must(t, err)
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
