package multiclustercmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/mclink"
	"github.com/trellis-mesh/trellis/internal/pki"
)

const (
	testToken  = "tok-en.secret-value"
	testServer = "https://b.example:6443"
)

func testCA(t *testing.T) []byte {
	t.Helper()
	cert, _, err := pki.NewRoot("cluster b", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return pki.EncodeCertsPEM(cert)
}

// tokenFixture is the Secret allow made in b, as the token controller
// fills it in (data nil: not yet).
func tokenFixture(ns, linked string, data map[string][]byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name: "trellis-link-" + linked + "-token", Namespace: ns,
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "trellis-link-" + linked},
		},
		Type: corev1.SecretTypeServiceAccountToken,
		Data: data,
	}
}

// controllerFixture is b's controller Deployment with args.
func controllerFixture(ns string, args ...string) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "trellis-controller", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "controller", Args: append([]string{"kubernetes"}, args...)}},
		}}},
	}
}

func TestLink(t *testing.T) {
	ca := testCA(t)
	filled := map[string][]byte{corev1.ServiceAccountTokenKey: []byte(testToken), corev1.ServiceAccountRootCAKey: ca}
	const ns = "trellis-system"
	tests := []struct {
		name    string
		objects []runtime.Object
		args    []string
		// wantErr is part of the error; else the link is checked.
		wantErr                        string
		wantNS, wantServer, wantDomain string
		wantTD                         string
		wantGateway                    string // "": flat mode
	}{
		{
			name:    "link",
			objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns, "--trust-domain=cluster-b.local")},
			wantNS:  ns, wantServer: testServer, wantDomain: "cluster.local", wantTD: "cluster-b.local",
		},
		{
			name:    "json, own namespace, address and domain",
			objects: []runtime.Object{tokenFixture("mesh", "a", filled), controllerFixture("mesh", "--trust-domain", "b.example.org")},
			args:    []string{"-n", "mesh", "--api-server-address", "https://10.0.0.10:6443", "--cluster-domain", "b.internal", "-o", "json"},
			wantNS:  "mesh", wantServer: "https://10.0.0.10:6443", wantDomain: "b.internal", wantTD: "b.example.org",
		},
		{
			name:    "default trust domain",
			objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns)},
			wantNS:  ns, wantServer: testServer, wantDomain: "cluster.local", wantTD: "cluster.local",
		},
		{
			name:    "no token secret",
			objects: []runtime.Object{controllerFixture(ns)},
			wantErr: "not found: run `trellis multicluster allow --linked-cluster-name a -n trellis-system | kubectl --context b apply -f -` first",
		},
		{
			name:    "token never filled in",
			objects: []runtime.Object{tokenFixture(ns, "a", nil), controllerFixture(ns)},
			args:    []string{"--timeout", "50ms"},
			wantErr: "has no token and ca.crt after 50ms",
		},
		{
			name:    "no CA",
			objects: []runtime.Object{tokenFixture(ns, "a", map[string][]byte{corev1.ServiceAccountTokenKey: []byte(testToken)}), controllerFixture(ns)},
			args:    []string{"--timeout", "50ms"},
			wantErr: "has no token and ca.crt",
		},
		{
			name:    "not allowed for this cluster",
			objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns)},
			args:    []string{"--linked-cluster-name", "c"},
			wantErr: "not found",
		},
		{
			name: "a secret of another account",
			objects: []runtime.Object{func() *corev1.Secret {
				s := tokenFixture(ns, "a", filled)
				s.Annotations[corev1.ServiceAccountNameKey] = "default"
				return s
			}(), controllerFixture(ns)},
			wantErr: `the token of ServiceAccount "default", want "trellis-link-a"`,
		},
		{
			name:    "no controller",
			objects: []runtime.Object{tokenFixture(ns, "a", filled)},
			wantErr: "trust domain of cluster b (is Trellis installed there?)",
		},
		{
			name:    "bad trust domain",
			objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns, "--trust-domain=Not A Domain")},
			wantErr: "trust domain",
		},
		{
			name:    "gateway mode",
			objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns, "--trust-domain=cluster-b.local")},
			args:    []string{"--gateway-address", "172.31.255.2:4180"},
			wantNS:  ns, wantServer: testServer, wantDomain: "cluster.local", wantTD: "cluster-b.local", wantGateway: "172.31.255.2:4180",
		},
		{name: "gateway by name", objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns)},
			args: []string{"--gateway-address", "gw.b.example:4180"}, wantErr: "gateway"},
		{name: "same names", args: []string{"--linked-cluster-name", "b"}, wantErr: "does not link to itself"},
		{name: "bad name", args: []string{"--cluster-name", "B_1"}, wantErr: "--cluster-name"},
		{name: "bad address", args: []string{"--api-server-address", "http://b:6443"}, wantErr: "--api-server-address"},
		{name: "bad cluster domain", objects: []runtime.Object{tokenFixture(ns, "a", filled), controllerFixture(ns)},
			args: []string{"--cluster-domain", "-x"}, wantErr: "cluster domain"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(tc.objects...)
			open := func(_, _ string) (Cluster, error) { return Cluster{Kube: kube, Server: testServer}, nil }
			args := append([]string{"link", "--context", "b", "--cluster-name", "b", "--linked-cluster-name", "a"}, tc.args...)
			out, stderr, err := run(t, newCommand(open), args...)
			if strings.Contains(out+stderr, testToken) || (err != nil && strings.Contains(err.Error(), testToken)) {
				t.Error("the token is printed in the clear")
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var s corev1.Secret
			if err := yaml.UnmarshalStrict([]byte(out), &s); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if strings.HasPrefix(out, "{") != json.Valid([]byte(out)) {
				t.Errorf("not the format asked for:\n%s", out)
			}
			l, err := mclink.FromSecret(&s)
			if err != nil {
				t.Fatal(err)
			}
			wantMode := mclink.ModeFlat
			if tc.wantGateway != "" {
				wantMode = mclink.ModeGateway
			}
			if s.Namespace != tc.wantNS || s.Name != "trellis-link-b" || l.Cluster != "b" || l.Mode != wantMode || l.Gateway != tc.wantGateway ||
				l.TrustDomain != tc.wantTD || l.ClusterDomain != tc.wantDomain {
				t.Errorf("secret %s/%s: %+v", s.Namespace, s.Name, l)
			}
			cfg, err := clientcmd.Load(l.Kubeconfig)
			if err != nil {
				t.Fatal(err)
			}
			ctx := cfg.Contexts[cfg.CurrentContext]
			if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
				t.Fatalf("kubeconfig without a whole current context: %+v", cfg)
			}
			c, u := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]
			if c.Server != tc.wantServer || !bytes.Equal(c.CertificateAuthorityData, ca) || c.InsecureSkipTLSVerify {
				t.Errorf("cluster %s: server %q, CA %q", ctx.Cluster, c.Server, c.CertificateAuthorityData)
			}
			if u.Token != testToken || ctx.AuthInfo != "trellis-link-a" || u.ClientCertificateData != nil || u.Exec != nil {
				t.Errorf("user %s: %+v", ctx.AuthInfo, u)
			}
		})
	}
}

// TestLinkWaitsForToken: the token controller fills the Secret in after
// allow is applied; link waits for it.
func TestLinkWaitsForToken(t *testing.T) {
	const ns = "trellis-system"
	kube := fake.NewClientset(tokenFixture(ns, "a", nil), controllerFixture(ns, "--trust-domain=cluster-b.local"))
	ca := testCA(t)
	go func() {
		time.Sleep(50 * time.Millisecond)
		s := tokenFixture(ns, "a", map[string][]byte{corev1.ServiceAccountTokenKey: []byte(testToken), corev1.ServiceAccountRootCAKey: ca})
		if _, err := kube.CoreV1().Secrets(ns).Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}()
	o := linkOptions{cluster: "b", linked: "a", namespace: ns, clusterDomain: "cluster.local", timeout: 10 * time.Second, poll: 10 * time.Millisecond}
	l, err := makeLink(t.Context(), Cluster{Kube: kube, Server: testServer}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(l.Kubeconfig, []byte(testToken)) {
		t.Error("the kubeconfig lacks the token filled in later")
	}
}

// TestLinkWarnsOfLoopback: a kubeconfig's 127.0.0.1 is not the peer seen
// from the linking cluster.
func TestLinkWarnsOfLoopback(t *testing.T) {
	const ns = "trellis-system"
	filled := map[string][]byte{corev1.ServiceAccountTokenKey: []byte(testToken), corev1.ServiceAccountRootCAKey: testCA(t)}
	kube := fake.NewClientset(tokenFixture(ns, "a", filled), controllerFixture(ns))
	for server, want := range map[string]bool{"https://127.0.0.1:6443": true, "https://localhost:6443": true, "https://[::1]:6443": true, testServer: false} {
		open := func(_, _ string) (Cluster, error) { return Cluster{Kube: kube, Server: server}, nil }
		_, stderr, err := run(t, newCommand(open), "link", "--cluster-name", "b", "--linked-cluster-name", "a")
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(stderr, "--api-server-address"); got != want {
			t.Errorf("%s: warned %v, want %v (%q)", server, got, want, stderr)
		}
	}
}
