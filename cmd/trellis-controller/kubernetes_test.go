package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/k8s/serve"
	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
	"github.com/trellis-mesh/trellis/inject"
	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/pki"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop()
	os.Exit(code)
}

var kubeServingLine = regexp.MustCompile(`msg="controller serving \(kubernetes mode\)" grpc=(\S+) admin=(\S+) webhook=(\S+)`)

// TestBinaryKubernetes runs the real `trellis-controller kubernetes`
// process against a real API server with the material `trellis install`
// generates mounted as the Deployment mounts it: /ready, the webhook
// injecting a pod of an annotated namespace with the images from the
// environment and the issuer's trust bundle, Certify with a token from the
// TokenRequest API, and a clean exit on SIGTERM.
func TestBinaryKubernetes(t *testing.T) {
	kubeconfig := apiservertest.Kubeconfig(t)
	client, err := serve.ClientFromKubeconfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trellis-controller")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	now := time.Now()
	id, err := install.GenerateIdentity("cluster.local", install.DefaultAnchorValidity, install.DefaultIssuerValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := install.GenerateWebhookTLS(install.Namespace, install.DefaultWebhookValidity, now)
	if err != nil {
		t.Fatal(err)
	}
	// The bundle comes from --trust-anchors-file (the mounted ConfigMap):
	// it holds a second anchor that ca.crt lacks, as during a rotation
	// with an external CA that writes only the issuer's CA into ca.crt.
	next, _, err := pki.NewRoot("next-anchor", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM := append(append([]byte{}, id.TrustAnchorsPEM...), pki.EncodeCertsPEM(next)...)
	issuerDir, webhookDir, anchorsDir := filepath.Join(dir, "issuer"), filepath.Join(dir, "webhook"), filepath.Join(dir, "anchors")
	anchorsFile := filepath.Join(anchorsDir, "ca-bundle.crt")
	for d, files := range map[string]map[string][]byte{
		issuerDir:  {"tls.crt": id.IssuerCertPEM, "tls.key": id.IssuerKeyPEM, "ca.crt": id.TrustAnchorsPEM},
		webhookDir: {"tls.crt": wh.CertPEM, "tls.key": wh.KeyPEM, "ca.crt": wh.CAPEM},
		anchorsDir: {"ca-bundle.crt": bundlePEM},
	} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(d, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := fmt.Sprintf("trellis-bin-%d", rand.Uint32())
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Annotations: map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "books"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "books", &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"identity.trellis.io"}, ExpirationSeconds: new(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token := tr.Status.Token

	cmd := exec.CommandContext(ctx, bin, "kubernetes", "--kubeconfig", kubeconfig,
		"--issuer-dir", issuerDir, "--trust-anchors-file", anchorsFile, "--webhook-tls-dir", webhookDir, "--trust-domain=cluster.local",
		"--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--webhook-addr", "127.0.0.1:0", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "TRELLIS_PROXY_IMAGE=example.test/proxy:bin", "TRELLIS_PROXY_IMAGE_PULL_POLICY=Never")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			t.Log(line)
			if strings.Contains(line, token) {
				t.Error("a token was logged")
			}
			if m := kubeServingLine.FindStringSubmatch(line); m != nil {
				addrs <- m[1:]
			}
		}
		exited <- cmd.Wait()
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("controller exited with %v after SIGTERM, want 0", err)
			}
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Error("controller did not exit on SIGTERM")
		}
	}()
	var grpcAddr, adminAddr, webhookAddr string
	select {
	case a := <-addrs:
		grpcAddr, adminAddr, webhookAddr = a[0], a[1], a[2]
	case err := <-exited:
		t.Fatalf("controller exited early: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("controller did not report its addresses")
	}
	resp, err := http.Get("http://" + adminAddr + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/ready = %d", resp.StatusCode)
	}

	// The webhook, verified as the API server does: the install's CA for
	// the Service's DNS name.
	caPool := x509.NewCertPool()
	caPool.AppendCertsFromPEM(wh.CAPEM)
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: caPool, ServerName: "trellis-controller.trellis-system.svc", MinVersion: tls.VersionTLS12,
	}}}
	defer hc.CloseIdleConnections()
	raw, _ := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "books", Namespace: ns},
		Spec:       corev1.PodSpec{ServiceAccountName: "books", Containers: []corev1.Container{{Name: "app", Image: "books"}}},
	})
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "uid-1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: ns,
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw},
		},
	})
	wresp, err := hc.Post("https://"+webhookAddr+inject.Path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(wresp.Body)
	wresp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &review); err != nil || review.Response == nil {
		t.Fatalf("webhook answered %s: %s (%v)", wresp.Status, out, err)
	}
	patch := string(review.Response.Patch)
	anchors, err := pki.ParseCertsPEM(bundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(anchors) != 2 {
		t.Fatalf("bundle of %d anchors, want 2", len(anchors))
	}
	anchorJSON, _ := json.Marshal(string(pki.EncodeCertsPEM(anchors...)))
	for _, want := range []string{"example.test/proxy:bin", `"Never"`, strings.Trim(string(anchorJSON), `"`)} {
		if !strings.Contains(patch, want) {
			t.Errorf("patch lacks %s:\n%s", want, patch)
		}
	}

	// Certify with the TokenRequest token, over TLS verified as proxies do.
	anchorPool := x509.NewCertPool()
	for _, a := range anchors {
		anchorPool.AddCert(a)
	}
	tlsCfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the SPIFFE verification below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, err := pki.Verify(raw, anchorPool, x509.ExtKeyUsageServerAuth, identity.Controller("cluster.local"), time.Now())
			return err
		},
	}
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	books := identity.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: "books"}
	key, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, books)
	if err != nil {
		t.Fatal(err)
	}
	cr, err := apiv1.NewIdentityClient(conn).Certify(ctx, &apiv1.CertifyRequest{Identity: books.String(), Token: []byte(token), CertificateSigningRequest: csr})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.Verify(cr.Chain, anchorPool, x509.ExtKeyUsageClientAuth, books, time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(cr.TrustAnchors) != 2 || !bytes.Equal(cr.TrustAnchors[1], next.Raw) {
		t.Fatalf("CertifyResponse.trust_anchors has %d anchors, want the 2 of --trust-anchors-file", len(cr.TrustAnchors))
	}
	// Policy answers too, only to the workload's own mTLS identity.
	req := &apiv1.InboundPolicyRequest{Workload: books.String(), Port: 8080}
	if ps, err := apiv1.NewPolicyClient(conn).WatchInbound(ctx, req); err == nil {
		if _, err := ps.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("policy watch without a client certificate: %v, want PermissionDenied", err)
		}
	}
	certCfg := tlsCfg.Clone()
	certCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &tls.Certificate{Certificate: cr.Chain, PrivateKey: key}, nil
	}
	certConn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(certCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer certConn.Close()
	ps, err := apiv1.NewPolicyClient(certConn).WatchInbound(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ps.Recv(); err != nil || p.GetName() != "default" {
		t.Fatalf("policy %v, %v", p, err)
	}

	// An issuer that expires fails readiness: write one valid for a few
	// seconds into the mounted Secret's files, as the kubelet would, its
	// anchor added to the bundle first.
	root, rootKey, err := pki.NewRoot("short-anchor", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	short, err := pki.NewTrustDomainIssuer(root, rootKey, "short-issuer", "cluster.local", 8*time.Second, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	shortKey, err := pki.EncodeKeyPEM(short.Key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		dir, name string
		data      []byte
	}{
		{anchorsDir, "ca-bundle.crt", append(append([]byte{}, bundlePEM...), pki.EncodeCertsPEM(root)...)},
		{issuerDir, "ca.crt", pki.EncodeCertsPEM(root)}, {issuerDir, "tls.key", shortKey}, {issuerDir, "tls.crt", pki.EncodeCertsPEM(short.Cert)},
	} {
		if err := os.WriteFile(filepath.Join(f.dir, f.name+".new"), f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(f.dir, f.name+".new"), filepath.Join(f.dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + adminAddr + "/ready")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "expire") {
			t.Logf("/ready after the issuer expired: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready is still %d %q a minute after installing an issuer valid 8 s", resp.StatusCode, b)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
