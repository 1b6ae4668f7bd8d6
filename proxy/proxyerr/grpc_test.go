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

// TestRenderLimits: a rate-limited request gets 429 and Retry-After in
// whole seconds rounded up; a gRPC call (ForRequest reads its content
// type) gets RESOURCE_EXHAUSTED, not the UNAVAILABLE of HTTP 429, and the
// Retry-After too; an overload is 503 (gRPC UNAVAILABLE), the app's.
func TestRenderLimits(t *testing.T) {
	for _, tt := range []struct {
		name, ct, reason    string
		status              int
		retry               time.Duration
		wantStatus          int
		wantGRPC, wantRetry string
		wantCulprit         Culprit
	}{
		{"http rate", "", ReasonRateLimited, 429, 1500 * time.Millisecond, 429, "", "2", Client},
		{"http rate, under a second", "text/plain", ReasonRateLimited, 429, time.Millisecond, 429, "", "1", Client},
		{"grpc rate", "application/grpc+proto", ReasonRateLimited, 429, 3 * time.Second, 200, "8", "3", Client},
		{"grpc overloaded", "application/grpc", ReasonOverloaded, 503, 0, 200, "14", "", App},
		{"http overloaded", "application/json", ReasonOverloaded, 503, 0, 503, "", "", App},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, _, hm := newRenderer(t, metrics.Inbound)
			req := httptest.NewRequest(http.MethodPost, "/x", nil)
			if tt.ct != "" {
				req.Header.Set("Content-Type", tt.ct)
			}
			e := ForRequest(req, tt.status, tt.reason, "limited")
			e.RetryAfter = tt.retry
			if e.Culprit != tt.wantCulprit {
				t.Errorf("culprit %s, want %s", e.Culprit, tt.wantCulprit)
			}
			rec := httptest.NewRecorder()
			r.Answer(context.Background(), rec, hm, e, time.Now())
			resp := rec.Result()
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("Grpc-Status") != tt.wantGRPC || resp.Header.Get("Retry-After") != tt.wantRetry {
				t.Errorf("status %d grpc-status %q retry-after %q, want %d %q %q", resp.StatusCode,
					resp.Header.Get("Grpc-Status"), resp.Header.Get("Retry-After"), tt.wantStatus, tt.wantGRPC, tt.wantRetry)
			}
			if got := FromResponse(resp); got == nil || got.Reason != tt.reason {
				t.Errorf("a peer reading it back: %+v, want reason %s", got, tt.reason)
			}
		})
	}
}
