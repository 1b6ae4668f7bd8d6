package vizcmd

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// proxyAdmin is a proxy's admin listener answering /ready; it counts
// the requests it gets.
func proxyAdmin(t *testing.T) (addr string, hits *atomic.Int32) {
	t.Helper()
	hits = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), hits
}

// demoWorkDir makes a work directory as `trellis demo` does (0700, the
// store 0600) whose store names a proxy at admin.
func demoWorkDir(t *testing.T, parent, admin string, age time.Duration) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "trellis-demo-")
	if err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, demoStore)
	if err := os.WriteFile(store, []byte("workloads:\n- name: web\n  adminAddr: "+admin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-age)
	if err := os.Chtimes(store, at, at); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestRunningDemoRefusesOthersDirectories: newer work directories another
// user could have written are skipped (their proxies never asked), and
// named when nothing else is left.
func TestRunningDemoRefusesOthersDirectories(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, dir string) (named string)
		err   string
	}{
		{"directory open to others", func(t *testing.T, dir string) string { chmod(t, dir, 0o755); return dir }, "mode 0755"},
		{"store readable by others", func(t *testing.T, dir string) string {
			chmod(t, filepath.Join(dir, demoStore), 0o644)
			return filepath.Join(dir, demoStore)
		}, "mode 0644"},
		{"symbolic link", func(t *testing.T, dir string) string {
			// The real directory elsewhere, its link where demos are.
			real := filepath.Join(t.TempDir(), "elsewhere")
			if err := os.Rename(dir, real); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, dir); err != nil {
				t.Fatal(err)
			}
			return dir
		}, "symbolic link"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			goodAddr, _ := proxyAdmin(t)
			plantedAddr, plantedHits := proxyAdmin(t)
			good := demoWorkDir(t, tmp, goodAddr, time.Hour)
			named := tc.plant(t, demoWorkDir(t, tmp, plantedAddr, 0))
			file, err := RunningDemo()
			if want := filepath.Join(good, demoStore); err != nil || file != want {
				t.Fatalf("RunningDemo = %s, %v; want %s", file, err, want)
			}
			if err := os.RemoveAll(good); err != nil {
				t.Fatal(err)
			}
			if _, err := openLocal(""); err == nil || !strings.Contains(err.Error(), named) || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("with only the planted directory: %v; want %q and %s", err, tc.err, named)
			}
			if n := plantedHits.Load(); n != 0 {
				t.Errorf("the planted store's proxy was asked %d times", n)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
