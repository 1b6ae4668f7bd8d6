//go:build linux

package netns

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTransparentMeshDeny: in transparent mode, with B's proxy at
// --default-inbound-policy deny and no --app-ports (the app port is
// learned from the original destination), a mesh call from A is refused
// with 403 naming the default, and B's app sees nothing.
func TestTransparentMeshDeny(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	tm := newTransparentMesh(ctx, t, "--default-inbound-policy", "deny")
	target := fmt.Sprintf("http://%s:%d/hello", ipB, appPort)
	start := time.Now()
	var err error
	for {
		_, err = get(ctx, tm.client, target)
		// Discovery may still be warming up (503); the refusal is final.
		if err != nil && strings.Contains(err.Error(), "status 403") {
			break
		}
		if err == nil {
			t.Fatal("a mesh call reached the app under deny")
		}
		select {
		case <-ctx.Done():
			t.Fatalf("GET %s: %v, want 403", target, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if !strings.Contains(err.Error(), "default:deny") || !strings.Contains(err.Error(), clientID) {
		t.Errorf("refusal %q does not name the default and the caller", err)
	}
	select {
	case req := <-tm.seen:
		t.Fatalf("B's app served %s under deny", req.URL.Path)
	default:
	}
	fams := scrape(ctx, t, tm.nsB, tm.adminURL+"/metrics")
	if n := sumCounter(fams, "trellis_inbound_authz_deny_total", map[string]string{"server": "default:deny", "client_id": clientID}); n < 1 {
		t.Errorf("deny_total = %v\n%s", n, dump(fams, "trellis_inbound_authz_deny_total"))
	}
	t.Logf("refused after %v: %v", time.Since(start), err)
}
