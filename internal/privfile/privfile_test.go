package privfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// privateDir is a 0700 directory holding secret (0600) and open (0644).
func privateDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"secret": 0o600, "open": 0o644} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(name), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	return dir
}

func TestOpenDir(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup returns the directory to open.
		setup  func(t *testing.T, dir string) string
		access Access
		uid    int // 0: the real one
		err    string
	}{
		{"private", func(t *testing.T, dir string) string { return dir }, Private, 0, ""},
		{"private, read-only asked", func(t *testing.T, dir string) string { return dir }, ReadOnly, 0, ""},
		{"readable by others", func(t *testing.T, dir string) string { chmod(t, dir, 0o755); return dir }, Private, 0, "mode 0755"},
		{"readable by others, read-only asked", func(t *testing.T, dir string) string { chmod(t, dir, 0o755); return dir }, ReadOnly, 0, ""},
		{"writable by group", func(t *testing.T, dir string) string { chmod(t, dir, 0o770); return dir }, ReadOnly, 0, "mode 0770"},
		{"writable by others", func(t *testing.T, dir string) string { chmod(t, dir, 0o757); return dir }, ReadOnly, 0, "chmod go-w"},
		{"sticky and writable by all", func(t *testing.T, dir string) string { chmod(t, dir, 0o777|os.ModeSticky); return dir }, ReadOnly, 0, "mode 0777"},
		{"symbolic link", func(t *testing.T, dir string) string {
			link := dir + "-link"
			if err := os.Symlink(dir, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, ReadOnly, 0, "symbolic link"},
		{"a file", func(t *testing.T, dir string) string { return filepath.Join(dir, "secret") }, ReadOnly, 0, "not a directory"},
		{"missing", func(t *testing.T, dir string) string { return dir + "-gone" }, ReadOnly, 0, "no such file"},
		{"another user's", func(t *testing.T, dir string) string { return dir }, ReadOnly, os.Getuid() + 1, "owned by uid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.setup(t, privateDir(t))
			if tc.uid != 0 {
				getuid = func() int { return tc.uid }
				defer func() { getuid = os.Getuid }()
			}
			root, err := OpenDir(dir, tc.access)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				root.Close()
				return
			}
			if err == nil {
				root.Close()
				t.Fatalf("%s accepted; want an error with %q", dir, tc.err)
			}
			if !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q: want %q and the path %s", err, tc.err, dir)
			}
		})
	}
}

func TestRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		file  string
		uid   int
		want  string
		err   string
	}{
		{"private file", nil, "secret", 0, "secret", ""},
		{"in a subdirectory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "tokens"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "tokens", "t"), []byte("tok"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "tokens/t", 0, "tok", ""},
		{"readable by others", nil, "open", 0, "", "mode 0644"},
		{"writable by group", func(t *testing.T, dir string) { chmod(t, filepath.Join(dir, "secret"), 0o620) }, "secret", 0, "", "mode 0620"},
		{"symbolic link", func(t *testing.T, dir string) {
			if err := os.Symlink("secret", filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
		}, "link", 0, "", "not a regular file"},
		{"a directory", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "sub", 0, "", "not a regular file"},
		{"escaping", nil, "../x", 0, "", "escapes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := privateDir(t)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			root, err := OpenDir(dir, Private)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			b, err := Read(root, tc.file)
			if tc.err == "" {
				if err != nil || string(b) != tc.want {
					t.Fatalf("Read(%s) = %q, %v; want %q", tc.file, b, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Read(%s) = %q, %v; want an error with %q", tc.file, b, err, tc.err)
			}
		})
	}
}

func TestReadOfAnotherUser(t *testing.T) {
	dir := privateDir(t)
	root, err := OpenDir(dir, Private)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	getuid = func() int { return os.Getuid() + 1 }
	defer func() { getuid = os.Getuid }()
	if _, err := Read(root, "secret"); err == nil || !strings.Contains(err.Error(), "owned by uid") ||
		!strings.Contains(err.Error(), filepath.Join(dir, "secret")) {
		t.Fatalf("a file of another user: %v", err)
	}
}

func TestWithin(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dir, path, want string
		ok              bool
	}{
		{dir, filepath.Join(dir, "tokens", "tap-api.token"), filepath.Join("tokens", "tap-api.token"), true},
		{dir, "tokens/t", filepath.Join("tokens", "t"), true},
		{dir, filepath.Join(dir, "..", "x"), "", false},
		{dir, "/root/.vault-token", "", false},
		{dir, "../x", "", false},
		{dir, dir, "", false},
		// The same directory through a symbolic link of its own.
		{link, filepath.Join(dir, "t"), "t", true},
	} {
		got, err := Within(tc.dir, tc.path)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("Within(%s, %s) = %q, %v; want %q, ok %v", tc.dir, tc.path, got, err, tc.want, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), tc.dir) {
			t.Errorf("error %q does not name %s", err, tc.dir)
		}
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
