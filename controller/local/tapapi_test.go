package local

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseLocalPath(t *testing.T) {
	for _, tc := range []struct {
		path, ns, name string
		ok             bool
	}{
		{tapPrefix + "tap", "", "", true},
		{tapPrefix + "namespaces/demo/tap", "demo", "", true},
		{tapPrefix + "namespaces/demo/workloads/web/tap", "demo", "web", true},
		{tapPrefix + "workloads/web/tap", "", "web", true},
		{tapPrefix + "namespaces//tap", "", "", false},
		{tapPrefix + "workloads//tap", "", "", false},
		{tapPrefix + "deployments/web/tap", "", "", false},
		{tapPrefix + "workloads/web/tap/x", "", "", false},
		{"/apis/other/v1/watch/tap", "", "", false},
	} {
		ns, name, ok := parseLocalPath(tc.path)
		if ns != tc.ns && tc.ok || name != tc.name && tc.ok || ok != tc.ok {
			t.Errorf("parseLocalPath(%q) = %q, %q, %v; want %q, %q, %v", tc.path, ns, name, ok, tc.ns, tc.name, tc.ok)
		}
	}
}

func TestReadTapToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	for _, tc := range []struct {
		name    string
		content string
		mode    os.FileMode
		err     string
	}{
		{"private", token + "\n", 0o600, ""},
		{"owner read only", token, 0o400, ""},
		{"group readable", token, 0o640, "mode 0640"},
		{"world readable", token, 0o644, "mode 0644"},
		{"world writable", token, 0o602, "mode 0602"},
		{"short", "short", 0o600, "shorter than 16"},
		{"huge", strings.Repeat("x", 5000), 0o600, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tap.token")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			got, err := readTapToken(path)
			if tc.err == "" {
				if err != nil || string(got) != token {
					t.Fatalf("readTapToken = %q, %v; want %q", got, err, token)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), path) {
				t.Fatalf("readTapToken = %q, %v; want an error with %q naming %s", got, err, tc.err, path)
			}
			if strings.HasPrefix(tc.err, "mode") && !strings.Contains(err.Error(), "chmod 600") {
				t.Errorf("error %q does not say the fix", err)
			}
		})
	}
	if _, err := readTapToken(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file was read")
	}
}

// TestLocalTapRefusesWhatProxiesWould: a request every proxy would refuse
// is a 400 naming why, before any proxy is looked up.
func TestLocalTapRefusesWhatProxiesWould(t *testing.T) {
	const token = "0123456789abcdef-token"
	lt := &localTap{token: []byte(token), slots: make(chan struct{}, 1)}
	for _, tc := range []struct {
		name, body string
		contains   string
	}{
		{"bad direction", `{"match":{"direction":"sideways"}}`, "match.direction"},
		{"long match", `{"match":{"method":"` + strings.Repeat("G", 4097) + `"}}`, "match.method"},
		{"sample", `{"sample":1.5}`, "sample"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, tapPrefix+"workloads/web/tap", strings.NewReader(tc.body))
			req.Header.Set("Authorization", "Bearer "+token)
			rec := httptest.NewRecorder()
			lt.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.contains) {
				t.Errorf("%d %s; want 400 naming %q", rec.Code, rec.Body.String(), tc.contains)
			}
		})
	}
}
