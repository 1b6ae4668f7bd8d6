package mclink

import (
	"bytes"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func good() Link {
	return Link{Cluster: "east", TrustDomain: "east.local", ClusterDomain: "cluster.local", Mode: ModeFlat, Kubeconfig: []byte("apiVersion: v1\n")}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Link)
		wantErr string // "" means valid
	}{
		{"valid", func(*Link) {}, ""},
		{"longest name", func(l *Link) { l.Cluster = strings.Repeat("a", 20) }, ""},
		{"name too long", func(l *Link) { l.Cluster = strings.Repeat("a", 21) }, "cluster name"},
		{"upper-case name", func(l *Link) { l.Cluster = "East" }, "cluster name"},
		{"empty name", func(l *Link) { l.Cluster = "" }, "cluster name"},
		{"bad trust domain", func(l *Link) { l.TrustDomain = "no spaces allowed" }, "trust domain"},
		{"bad cluster domain", func(l *Link) { l.ClusterDomain = "-x" }, "cluster domain"},
		{"other mode", func(l *Link) { l.Mode = "mesh" }, "mode"},
		{"gateway mode without a gateway", func(l *Link) { l.Mode = ModeGateway }, "gateway"},
		{"gateway mode with a host name", func(l *Link) { l.Mode, l.Gateway = ModeGateway, "gw.example:4180" }, "gateway"},
		{"a gateway in flat mode", func(l *Link) { l.Gateway = "172.31.255.2:4180" }, "gateway"},
		{"gateway mode", func(l *Link) { l.Mode, l.Gateway = ModeGateway, "172.31.255.2:4180" }, ""},
		{"no kubeconfig", func(l *Link) { l.Kubeconfig = nil }, "kubeconfig"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := good()
			tc.edit(&l)
			err := l.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestSecretRoundTrip(t *testing.T) {
	l := good()
	s := l.Secret("trellis-system")
	if s.Name != "trellis-link-east" || s.Namespace != "trellis-system" || s.Type != SecretType || s.Labels[LabelLink] != "east" {
		t.Errorf("secret %s/%s type %s labels %v", s.Namespace, s.Name, s.Type, s.Labels)
	}
	got, err := FromSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster != l.Cluster || got.TrustDomain != l.TrustDomain || got.ClusterDomain != l.ClusterDomain ||
		got.Mode != l.Mode || !bytes.Equal(got.Kubeconfig, l.Kubeconfig) {
		t.Errorf("round trip: %+v, want %+v", got, l)
	}
	l.Mode, l.Gateway = ModeGateway, "172.31.255.2:4180"
	if got, err := FromSecret(l.Secret("trellis-system")); err != nil || got.Mode != ModeGateway || got.Gateway != l.Gateway {
		t.Errorf("gateway mode round trip: %+v, %v", got, err)
	}

	for _, tc := range []struct {
		name    string
		edit    func(*corev1.Secret)
		wantErr string
	}{
		{"other type", func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }, "type"},
		{"renamed", func(s *corev1.Secret) { s.Name = "trellis-link-west" }, "want the name trellis-link-east"},
		{"invalid", func(s *corev1.Secret) { delete(s.Data, KeyMode) }, "mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := l.Secret("trellis-system")
			tc.edit(s)
			if _, err := FromSecret(s); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
}

func TestMirrorName(t *testing.T) {
	for _, tc := range []struct {
		svc, cluster, want string
		ok                 bool
	}{
		{"books", "east", "books-east", true},
		{strings.Repeat("s", 58), "east", strings.Repeat("s", 58) + "-east", true},
		{strings.Repeat("s", 59), "east", "", false}, // 64 characters
		{"1books", "east", "", false},                // a DNS-1035 label starts with a letter
	} {
		got, err := MirrorName(tc.svc, tc.cluster)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("MirrorName(%q, %q) = %q, %v", tc.svc, tc.cluster, got, err)
		}
	}
}

func TestRemoteIdentity(t *testing.T) {
	const id = "spiffe://east.local/ns/shop/sa/books"
	for _, tc := range []struct {
		name, managedBy, annotation string
		ok                          bool
	}{
		{"mirror slice", ManagedBy, id, true},
		{"not a mirror", "endpointslice-controller.k8s.io", id, false},
		{"no identity", ManagedBy, "", false},
		{"not an identity", ManagedBy, "books", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := RemoteIdentity(tc.managedBy, map[string]string{AnnotationRemoteIdentity: tc.annotation})
			if ok != tc.ok || (ok && got.String() != id) {
				t.Errorf("RemoteIdentity = %v, %v", got, ok)
			}
		})
	}
}

// TestFromSecretRefusesRiskyKubeconfig: whoever writes a link Secret must
// not get the controller to run a command or read its files.
func TestFromSecretRefusesRiskyKubeconfig(t *testing.T) {
	const head = "apiVersion: v1\nkind: Config\n"
	for _, tc := range []struct{ name, kubeconfig, wantErr string }{
		{"inline token and CA", head + "clusters: [{name: b, cluster: {server: 'https://b:6443', certificate-authority-data: Zm9v}}]\nusers: [{name: u, user: {token: t}}]\n", ""},
		{"exec plugin", head + "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: [-c, id]}}}]\n", "exec"},
		{"auth provider", head + "users: [{name: u, user: {auth-provider: {name: oidc}}}]\n", "exec"},
		{"token file", head + "users: [{name: u, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]\n", "files"},
		{"client key file", head + "users: [{name: u, user: {client-key: /etc/key}}]\n", "files"},
		{"CA file", head + "clusters: [{name: b, cluster: {server: 'https://b:6443', certificate-authority: /etc/ca}}]\n", "CA file"},
		{"insecure", head + "clusters: [{name: b, cluster: {server: 'https://b:6443', insecure-skip-tls-verify: true}}]\n", "insecure"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := good()
			l.Kubeconfig = []byte(tc.kubeconfig)
			_, err := FromSecret(l.Secret("trellis-system"))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err %v, want one naming %q", err, tc.wantErr)
			}
		})
	}
}
