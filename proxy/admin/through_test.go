package admin

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/internal/syncbuf"
	"github.com/trellis-mesh/trellis/proxy/selfconn"
)

// A POST /shutdown on a connection the proxy itself dialled (its inbound
// side relaying a mesh peer) is refused even though it comes from
// 127.0.0.1; the same request from another loopback connection is served.
// Both are logged with the caller's address.
func TestShutdownRefusedThroughProxy(t *testing.T) {
	var self selfconn.Set
	var calls atomic.Int32
	var logs syncbuf.Buffer
	srv := httptest.NewServer(Handler(Options{
		Shutdown:     func() { calls.Add(1) },
		ThroughProxy: self.Contains,
		Logger:       slog.New(slog.NewTextHandler(&logs, nil)),
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	relayed := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			return self.Dial(ctx, &net.Dialer{}, network, a)
		},
	}}
	resp, err := relayed.Post("http://"+addr+"/shutdown", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || calls.Load() != 0 {
		t.Fatalf("relayed POST /shutdown = %d (shutdowns %d), want 403 and none", resp.StatusCode, calls.Load())
	}
	if !strings.Contains(logs.String(), "came through this proxy") {
		t.Errorf("refusal not logged: %q", logs.String())
	}

	resp, err = srv.Client().Post(srv.URL+"/shutdown", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || calls.Load() != 1 {
		t.Fatalf("local POST /shutdown = %d (shutdowns %d), want 202 and one", resp.StatusCode, calls.Load())
	}
	if !strings.Contains(logs.String(), "shutdown requested") || !strings.Contains(logs.String(), "remote=127.0.0.1:") {
		t.Errorf("shutdown caller not logged: %q", logs.String())
	}
}
