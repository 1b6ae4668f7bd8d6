package httpget

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			_, _ = w.Write([]byte("0123456789"))
		case "/missing":
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name, path string
		max        int64
		want, err  string
	}{
		{"whole body", "/ok", 10, "0123456789", ""},
		{"over the limit", "/ok", 9, "", "larger than 9 bytes"},
		{"status", "/missing", 100, "", "404 Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Body(context.Background(), srv.Client(), srv.URL+tc.path, tc.max)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), srv.URL+tc.path) {
					t.Fatalf("err = %v, want one naming the URL and %q", err, tc.err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("Body = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Body(context.Background(), nil, "http://127.0.0.1:1/", 10); err == nil || !strings.Contains(err.Error(), "GET http://127.0.0.1:1/") {
		t.Errorf("unreachable: err = %v, want one naming the URL", err)
	}
}
