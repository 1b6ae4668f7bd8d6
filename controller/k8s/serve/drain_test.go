package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net/http"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// TestServeDrainsBeforeClosing: once stopped, the controller reports not
// ready but keeps its webhook listener open for the drain delay, so the
// API server, still routing to this replica until the endpoint is removed,
// gets answers rather than refused connections.
func TestServeDrainsBeforeClosing(t *testing.T) {
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	dir := t.TempDir()
	certPEM, keyPEM, leaf := keyPair(t, "webhook")
	writeSecretDir(t, dir, 1, certPEM, keyPEM)
	serverTLS, _ := mtls(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Start(ctx, Config{
		Client: client, TLS: serverTLS, Listen: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), SyncTimeout: 30 * time.Second,
		WebhookAddr: "127.0.0.1:0", WebhookTLSDir: dir, DrainDelay: 8 * time.Second,
		Webhook: func(NamespaceAnnotations) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DisableKeepAlives: true}}
	webhook := func() error {
		resp, err := hc.Post("https://"+c.WebhookAddr()+"/inject", "application/json", nil)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	if err := webhook(); err != nil {
		t.Fatalf("webhook before the stop: %v", err)
	}

	cancel()
	start := time.Now()
	for {
		resp, err := http.Get("http://" + c.AdminAddr() + "/ready")
		if err != nil {
			t.Fatalf("admin server gone before the drain ended: %v", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("still ready 10 s after the stop")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := webhook(); err != nil {
		t.Errorf("webhook refused while draining (not ready, endpoint being removed): %v", err)
	}
	if err := c.Wait(); err != nil {
		t.Errorf("controller: %v", err)
	}
	t.Logf("stopped %s after the cancel", time.Since(start).Round(time.Millisecond))
	if err := webhook(); err == nil {
		t.Error("webhook still answering after the controller stopped")
	}
}
