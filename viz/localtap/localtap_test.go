package localtap

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
)

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		r    model.Resource
		want string
		err  bool
	}{
		{model.Resource{}, prefix + "tap", false},
		{model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, prefix + "namespaces/demo/tap", false},
		{model.Resource{Kind: "workloads", Name: "web"}, prefix + "workloads/web/tap", false},
		{model.Resource{Kind: "workloads", Namespace: "demo", Name: "web"}, prefix + "namespaces/demo/workloads/web/tap", false},
		{model.Resource{Kind: "workloads"}, "", true},
		{model.Resource{Kind: "deployments", Name: "web"}, "", true},
	} {
		got, err := Path(tc.r)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Path(%+v) = %q, %v; want %q, error %v", tc.r, got, err, tc.want, tc.err)
		}
	}
}

// demoDir makes a work directory as `trellis demo` does (os.MkdirTemp:
// 0700; tokens/tap-api.token: 0600) naming addr, and returns it.
func demoDir(t *testing.T, parent, addr string) string {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "trellis-demo-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "tokens", "tap-api.token")
	if err := os.WriteFile(tok, []byte("the-demo-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteInfo(dir, Info{Addr: addr, TokenFile: tok}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestOpen(t *testing.T) {
	// A secret of the user's outside any demo directory (~/.vault-token).
	secret := filepath.Join(t.TempDir(), "vault-token")
	if err := os.WriteFile(secret, []byte("s.vault-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// setup changes a good demo directory; it returns the directory to
		// open and the path the error must name.
		setup func(t *testing.T, dir string) (open, named string)
		err   string
	}{
		{"the demo's", func(t *testing.T, dir string) (string, string) { return dir, "" }, ""},
		// Named with --local-dir: others may read it (t.TempDir's are 0755),
		// never write in it.
		{"directory others may read", func(t *testing.T, dir string) (string, string) {
			chmod(t, dir, 0o755)
			return dir, ""
		}, ""},
		{"directory writable by group", func(t *testing.T, dir string) (string, string) {
			chmod(t, dir, 0o775)
			return dir, dir
		}, "mode 0775"},
		{"directory writable by others", func(t *testing.T, dir string) (string, string) {
			chmod(t, dir, 0o777)
			return dir, dir
		}, "mode 0777"},
		{"symbolic link", func(t *testing.T, dir string) (string, string) {
			link := filepath.Join(t.TempDir(), "trellis-demo-link")
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
			return link, link
		}, "symbolic link"},
		{"token outside the directory", func(t *testing.T, dir string) (string, string) {
			if err := WriteInfo(dir, Info{Addr: "127.0.0.1:1", TokenFile: secret}); err != nil {
				t.Fatal(err)
			}
			return dir, secret
		}, "outside"},
		{"token escaping with ..", func(t *testing.T, dir string) (string, string) {
			// A sibling of the directory, named through it (not cleaned).
			sibling := filepath.Join(filepath.Dir(dir), "vault-token")
			if err := os.WriteFile(sibling, []byte("s.vault-secret"), 0o600); err != nil {
				t.Fatal(err)
			}
			tok := dir + "/../vault-token"
			if err := WriteInfo(dir, Info{Addr: "127.0.0.1:1", TokenFile: tok}); err != nil {
				t.Fatal(err)
			}
			return dir, tok
		}, "outside"},
		{"token readable by others", func(t *testing.T, dir string) (string, string) {
			tok := filepath.Join(dir, "tokens", "tap-api.token")
			chmod(t, tok, 0o644)
			return dir, tok
		}, "mode 0644"},
		{"no info file", func(t *testing.T, dir string) (string, string) {
			if err := os.Remove(filepath.Join(dir, InfoFile)); err != nil {
				t.Fatal(err)
			}
			return dir, filepath.Join(dir, InfoFile)
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, named := tc.setup(t, demoDir(t, t.TempDir(), "127.0.0.1:1"))
			tp, err := Open(dir)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tp.Token != "the-demo-token-0123456789" || tp.Addr != "127.0.0.1:1" {
					t.Errorf("opened %+v", tp)
				}
				return
			}
			if err == nil {
				t.Fatalf("opened %+v; want an error with %q", tp, tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), named) {
				t.Errorf("error %q: want %q and the path %s", err, tc.err, named)
			}
		})
	}
}

// TestFindRunningSkipsPlanted: a newer directory that is not private as
// the demo makes it (here: open to others) is never used, its listener
// never dialled, and the error names it when nothing else is left.
func TestFindRunningSkipsPlanted(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	good, attacker := listen(t), listen(t)
	gooddir := demoDir(t, tmp, good.Addr().String())
	planted := demoDir(t, tmp, attacker.Addr().String())
	chmod(t, planted, 0o755)
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(gooddir, InfoFile), old, old); err != nil {
		t.Fatal(err)
	}
	tp, dir, err := FindRunning()
	if err != nil || dir != gooddir || tp.Addr != good.Addr().String() {
		t.Fatalf("FindRunning = %+v, %s, %v; want %s", tp, dir, err, gooddir)
	}
	if err := os.RemoveAll(gooddir); err != nil {
		t.Fatal(err)
	}
	_, _, err = FindRunning()
	if err == nil || !strings.Contains(err.Error(), planted) || !strings.Contains(err.Error(), "mode 0755") {
		t.Fatalf("with only the planted directory: %v", err)
	}
	if c := accepted(attacker); c != 0 {
		t.Errorf("the planted directory's listener was dialled %d times", c)
	}
}

// listen is a loopback listener that counts its connections.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cl := &countingListener{Listener: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cl.n.Add(1)
			c.Close()
		}
	}()
	return cl
}

type countingListener struct {
	net.Listener
	n atomic.Int32
}

func accepted(ln net.Listener) int32 { return ln.(*countingListener).n.Load() }

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
