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
				req.ProtoMajor, req.ProtoMinor = 2, 0
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

// Which requests get the proxy's own answers as gRPC, and with what code.
func TestGRPCCallAndCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		major  int
		h1     bool // the caller spoke HTTP/1 (carried over the mesh since)
		ct     string
		want   bool
	}{
		{"gRPC over HTTP/2", http.MethodPost, 2, false, "application/grpc", true},
		{"gRPC with a codec", http.MethodPost, 2, false, "application/grpc+proto", true},
		{"gRPC-Web: an HTTP status", http.MethodPost, 2, false, "application/grpc-web", false},
		{"HTTP/1 with a gRPC content type: no trailers to read", http.MethodPost, 1, false, "application/grpc", false},
		{"an HTTP/1 caller carried over the mesh", http.MethodPost, 2, true, "application/grpc", false},
		{"GET with a gRPC content type", http.MethodGet, 2, false, "application/grpc", false},
		{"plain HTTP/2", http.MethodPost, 2, false, "application/json", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "http://svc/", nil)
			r.ProtoMajor = tc.major
			r.Header.Set("Content-Type", tc.ct)
			if got := GRPCCall(r, tc.h1); got != tc.want {
				t.Fatalf("GRPCCall = %v, want %v", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		e    *Error
		want string
	}{
		{New(http.StatusServiceUnavailable, ReasonNoEndpoints, ""), "14"},
		{New(http.StatusBadGateway, ReasonAppUnreachable, ""), "14"},
		{New(http.StatusGatewayTimeout, ReasonAppTimeout, ""), "4"},
		{New(http.StatusGatewayTimeout, ReasonTimeout, ""), "4"},
		{New(http.StatusTooManyRequests, ReasonRateLimited, ""), "8"},
		{New(http.StatusRequestHeaderFieldsTooLarge, ReasonHeadersTooLarge, ""), "8"},
		{New(http.StatusBadRequest, ReasonBadBody, ""), "3"},
		{New(http.StatusForbidden, "unauthorized", ""), "7"},
		{New(http.StatusNotFound, ReasonNoRoute, ""), "12"},
	} {
		if got := tc.e.grpcCode(); got != tc.want {
			t.Errorf("%d %s: grpc-status %s, want %s", tc.e.Status, tc.e.Reason, got, tc.want)
		}
	}
}
