package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// wait bounds how long a test waits for a notification; the poll is set far
// beyond it, so a notification within it comes from the directory watch.
const wait = 10 * time.Second

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// kubeVolume lays out dir as the kubelet's atomic writer does: the files
// live in a timestamped directory, `..data` points to it, and each visible
// name is a symlink through `..data`.
func kubeVolume(t *testing.T, dir, gen, name, content string) {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, gen), 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, gen, name), content)
	if err := os.Symlink(gen, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func TestChangesAreSeen(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares dir before the watch starts; change modifies the
		// watched file (dir/f) to hold "new".
		setup  func(t *testing.T, dir string)
		change func(t *testing.T, dir string)
	}{
		{
			name:  "atomic rename",
			setup: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "f"), "old") },
			change: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, ".f.tmp"), "new")
				if err := os.Rename(filepath.Join(dir, ".f.tmp"), filepath.Join(dir, "f")); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:   "in-place write",
			setup:  func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "f"), "old") },
			change: func(t *testing.T, dir string) { writeFile(t, filepath.Join(dir, "f"), "new") },
		},
		{
			name:  "created",
			setup: func(t *testing.T, dir string) {},
			change: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "f"), "new")
			},
		},
		{
			name:  "kubernetes ..data symlink swap",
			setup: func(t *testing.T, dir string) { kubeVolume(t, dir, "..gen1", "f", "old") },
			change: func(t *testing.T, dir string) {
				if err := os.Mkdir(filepath.Join(dir, "..gen2"), 0o700); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, "..gen2", "f"), "new")
				tmp := filepath.Join(dir, "..data_tmp")
				if err := os.Symlink("..gen2", tmp); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(t, dir)
			w := Start(context.Background(), Options{Dir: dir, Names: []string{"f"}, Poll: time.Hour})
			t.Cleanup(w.Stop)
			tt.change(t, dir)
			select {
			case <-w.C():
			case <-time.After(wait):
				t.Fatal("no notification after the change")
			}
			// The notification comes after the burst: the file reads new.
			if b, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(b) != "new" {
				t.Errorf("after the notification f = %q, %v; want \"new\"", b, err)
			}
		})
	}
}

func TestConcerns(t *testing.T) {
	named := Options{Names: []string{"tls.crt", "tls.key"}}
	tests := []struct {
		opts Options
		path string
		want bool
	}{
		{named, "/d/tls.crt", true},
		{named, "/d/tls.key", true},
		{named, "/d/..data", true},
		{named, "/d/..data_tmp", true},
		{named, "/d/..2024_01_01_00_00_00.123", true},
		{named, "/d/ca.crt", false},
		{named, "/d/.tls.crt.swp", false},
		{named, "/d/tls.crt~", false},
		{Options{}, "/d/anything", true},
	}
	for _, tt := range tests {
		if got := tt.opts.concerns(tt.path); got != tt.want {
			t.Errorf("Names %v: concerns(%q) = %v, want %v", tt.opts.Names, tt.path, got, tt.want)
		}
	}
}

// TestPollsWithoutWatch: a directory that cannot be watched (here, it does
// not exist yet) is still polled.
func TestPollsWithoutWatch(t *testing.T) {
	w := Start(context.Background(), Options{Dir: filepath.Join(t.TempDir(), "missing"), Poll: 10 * time.Millisecond})
	defer w.Stop()
	for range 2 {
		select {
		case <-w.C():
		case <-time.After(wait):
			t.Fatal("no poll notification")
		}
	}
}

// TestContextEndsWatch: cancelling the context stops the watcher (Stop
// then returns at once), and no notification follows.
func TestContextEndsWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := Start(ctx, Options{Dir: t.TempDir(), Poll: time.Millisecond})
	cancel()
	select {
	case <-w.done:
	case <-time.After(wait):
		t.Fatal("watcher still running after its context ended")
	}
	w.Stop()
	// Drain what was sent before the cancel; nothing more can come.
	select {
	case <-w.C():
	default:
	}
	select {
	case <-w.C():
		t.Error("notification after the watcher stopped")
	default:
	}
}
