package proxyerr

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// TestRenderGRPC: a gRPC call the proxy refuses gets a trailers-only
// answer: 200, grpc-status from the HTTP status (403: PERMISSION_DENIED),
// grpc-message percent-encoded, trellis-error as for HTTP, no body.
func TestRenderGRPC(t *testing.T) {
	r, _, hm := newRenderer(t, metrics.Inbound)
	rec := httptest.NewRecorder()
	e := New(http.StatusForbidden, "unauthorized", `denied: 100% "é"`)
	e.GRPC = true
	r.Answer(context.Background(), rec, hm, e, time.Now())
	resp := rec.Result()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" || rec.Body.Len() != 0 {
		t.Fatalf("status %d, content-type %q, body %q", resp.StatusCode, resp.Header.Get("Content-Type"), rec.Body.String())
	}
	if got := resp.Header.Get("Grpc-Status"); got != "7" {
		t.Errorf("grpc-status %q, want 7", got)
	}
	if got := resp.Header.Get("Grpc-Message"); got != `denied: 100%25 "%C3%A9"` {
		t.Errorf("grpc-message %q", got)
	}
	if resp.Header.Get(HeaderError) == "" {
		t.Error("no trellis-error")
	}
	for status, want := range map[int]string{400: "13", 401: "16", 403: "7", 404: "12", 429: "14", 502: "14", 503: "14", 504: "14", 500: "2"} {
		if got := GRPCCode(status); got != want {
			t.Errorf("GRPCCode(%d) = %s, want %s", status, got, want)
		}
	}
}
