package ewsecret

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/trellis-mesh/trellis/internal/ewtoken"
)

func TestSecretRoundTrip(t *testing.T) {
	b, err := ewtoken.NewBootstrap("shop", "legacy", nil)
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := For(b, "trellis-system", exp)
	if s.Name != "trellis-ew-token-"+b.Hash()[:16] || s.Namespace != "trellis-system" || s.Type != SecretType || s.Labels[LabelToken] != "true" {
		t.Errorf("secret %s/%s type %s labels %v", s.Namespace, s.Name, s.Type, s.Labels)
	}
	for k, v := range s.Data {
		if strings.Contains(string(v), b.Token()[len(b.Token())-43:]) {
			t.Errorf("data %s holds the token's secret", k)
		}
	}
	rec, err := Read(s)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Hash != b.Hash() || rec.Namespace != "shop" || rec.Name != "legacy" || !rec.Expiry.Equal(exp) {
		t.Errorf("record %+v", rec)
	}
}

func TestReadRefuses(t *testing.T) {
	b, _ := ewtoken.NewBootstrap("shop", "legacy", nil)
	for _, tc := range []struct {
		name string
		edit func(*corev1.Secret)
		want string
	}{
		{"type", func(s *corev1.Secret) { s.Type = corev1.SecretTypeOpaque }, "type"},
		{"renamed", func(s *corev1.Secret) { s.Name = SecretPrefix + "0000000000000000" }, "hash"},
		{"upper-case hash", func(s *corev1.Secret) { s.Data[KeyHash] = []byte(strings.ToUpper(b.Hash())) }, "hash"},
		{"short hash", func(s *corev1.Secret) { s.Data[KeyHash] = []byte(b.Hash()[:16]) }, "hash"},
		{"bad namespace", func(s *corev1.Secret) { s.Data[KeyNamespace] = []byte("Shop") }, "namespace"},
		{"no expiry", func(s *corev1.Secret) { delete(s.Data, KeyExpiry) }, KeyExpiry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := For(b, "trellis-system", time.Now())
			tc.edit(s)
			if _, err := Read(s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want one naming %q", err, tc.want)
			}
		})
	}
}

func TestMint(t *testing.T) {
	kube := fake.NewClientset()
	now := time.Date(2030, 1, 2, 3, 4, 5, 600, time.UTC)
	b, exp, err := Mint(context.Background(), kube.CoreV1(), "trellis-system", "shop", "legacy", 2*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if want := now.Add(2 * time.Hour).Truncate(time.Second); !exp.Equal(want) {
		t.Errorf("expiry %v, want %v", exp, want)
	}
	s, err := kube.CoreV1().Secrets("trellis-system").Get(context.Background(), Name(b.Hash()), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Read(s)
	if err != nil || rec.Hash != b.Hash() || !rec.Expiry.Equal(exp) {
		t.Errorf("stored record %+v, %v", rec, err)
	}
	for _, ttl := range []time.Duration{0, -time.Second, MaxTTL + time.Second} {
		if _, _, err := Mint(context.Background(), kube.CoreV1(), "trellis-system", "shop", "legacy", ttl, now); err == nil {
			t.Errorf("ttl %s accepted", ttl)
		}
	}
	if _, _, err := Mint(context.Background(), kube.CoreV1(), "trellis-system", "shop", "Legacy", time.Hour, now); err == nil {
		t.Error("a bad name was accepted")
	}
}
