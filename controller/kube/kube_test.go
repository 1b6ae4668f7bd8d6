package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/trellis-mesh/trellis/inject"
)

func TestInjectorConfigFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    inject.Config
		wantErr string
	}{
		{"unset keeps defaults", nil, inject.Config{}, ""},
		{"chart values", map[string]string{
			"TRELLIS_PROXY_IMAGE": "reg/proxy:1", "TRELLIS_INIT_IMAGE": "reg/init:1", "TRELLIS_PROXY_IMAGE_PULL_POLICY": "Always",
		}, inject.Config{ProxyImage: "reg/proxy:1", InitImage: "reg/init:1", ImagePullPolicy: corev1.PullAlways}, ""},
		{"bad pull policy", map[string]string{"TRELLIS_PROXY_IMAGE_PULL_POLICY": "Sometimes"}, inject.Config{}, "TRELLIS_PROXY_IMAGE_PULL_POLICY"},
		{"proxy resources, log level and cni", map[string]string{
			"TRELLIS_PROXY_CPU_REQUEST": "20m", "TRELLIS_PROXY_CPU_LIMIT": "", "TRELLIS_PROXY_MEMORY_REQUEST": "30Mi", "TRELLIS_PROXY_MEMORY_LIMIT": "96Mi",
			"TRELLIS_PROXY_LOG_LEVEL": "debug", "TRELLIS_PROXY_REDIRECT": "cni", "TRELLIS_PROXY_DEFAULT_INBOUND_POLICY": "deny",
		}, inject.Config{ProxyLogLevel: "debug", DefaultRedirect: "cni", DefaultInboundPolicy: "deny", ProxyResources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("30Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("96Mi")},
		}}, ""},
		{"bad quantity", map[string]string{"TRELLIS_PROXY_MEMORY_LIMIT": "lots"}, inject.Config{}, "TRELLIS_PROXY_MEMORY_LIMIT"},
		{"zero limit", map[string]string{"TRELLIS_PROXY_CPU_LIMIT": "0"}, inject.Config{}, "TRELLIS_PROXY_CPU_LIMIT"},
		{"request above limit", map[string]string{"TRELLIS_PROXY_MEMORY_REQUEST": "1Gi", "TRELLIS_PROXY_MEMORY_LIMIT": "64Mi"}, inject.Config{}, "exceeds its limit"},
		{"bad log level", map[string]string{"TRELLIS_PROXY_LOG_LEVEL": "loud"}, inject.Config{}, "proxy log level"},
		{"bad default inbound policy", map[string]string{"TRELLIS_PROXY_DEFAULT_INBOUND_POLICY": "yes"}, inject.Config{}, "default inbound policy \"yes\": want one of deny, audit"},
		{"bad redirect", map[string]string{"TRELLIS_PROXY_REDIRECT": "magic"}, inject.Config{}, "default redirect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := injectorConfigFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ProxyImage != tc.want.ProxyImage || got.InitImage != tc.want.InitImage || got.ImagePullPolicy != tc.want.ImagePullPolicy ||
				got.ProxyLogLevel != tc.want.ProxyLogLevel || got.DefaultRedirect != tc.want.DefaultRedirect || got.DefaultInboundPolicy != tc.want.DefaultInboundPolicy ||
				!apiequality.Semantic.DeepEqual(got.ProxyResources, tc.want.ProxyResources) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
