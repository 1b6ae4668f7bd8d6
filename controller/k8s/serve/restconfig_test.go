package serve

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRESTConfigNotThrottled: the controller's API client is not held to
// client-go's default of 5 requests a second, which queued the TokenReviews
// of a Certify storm (bench/ctrlscale).
func TestRESTConfigNotThrottled(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	const doc = `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(kubeconfig, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS < 100 || cfg.Burst < 200 || cfg.RateLimiter != nil {
		t.Errorf("API client limits QPS %v burst %d (rate limiter %v): a Certify storm would queue its TokenReviews", cfg.QPS, cfg.Burst, cfg.RateLimiter)
	}
	if cfg.UserAgent != "trellis-controller" {
		t.Errorf("user agent %q", cfg.UserAgent)
	}
}
