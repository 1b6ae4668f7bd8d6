package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestBuildIsReproducible(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "bin")
	if err := os.WriteFile(src, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	spec := Spec{
		Ref:        "example.test/repro:1",
		Files:      []File{{Path: "/usr/bin/app", Source: src}, {Path: "/tmp", Dir: true, Mode: 0o1777}, {Path: "/bin/app", Link: "/usr/bin/app"}},
		Entrypoint: []string{"/usr/bin/app"},
	}
	var sums [2][32]byte
	var digests [2]string
	for i := range 2 {
		out := filepath.Join(dir, "img.tar")
		d, err := Build(spec, out)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(b)
		digests[i] = d.String()
		// A later mtime on the source must not change anything.
		if err := os.Chtimes(src, time.Now(), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if sums[0] != sums[1] || digests[0] != digests[1] {
		t.Fatalf("two builds differ: %x %s vs %x %s", sums[0], digests[0], sums[1], digests[1])
	}
}

func TestLayerTarNormalises(t *testing.T) {
	mtime := time.Unix(1700000000, 0).UTC()
	b, err := LayerTar([]File{
		{Path: "/z/file", Data: []byte("hi"), Mode: 0o644},
		{Path: "/a/b/c", Link: "../z/file"},
	}, mtime)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(mtime) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: mtime %v uid %d gid %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
	want := []string{"a/", "a/b/", "a/b/c", "z/", "z/file"}
	if len(names) != len(want) {
		t.Fatalf("entries %q, want %q", names, want)
	}
	for i := range want {
		if names[i] != want[i] {
			t.Fatalf("entries %q, want %q", names, want)
		}
	}
}

func TestLayerTarRejectsBadInput(t *testing.T) {
	cases := []struct {
		name  string
		files []File
	}{
		{"relative", []File{{Path: "etc/x", Data: []byte{}}}},
		{"root", []File{{Path: "/", Dir: true}}},
		{"duplicate", []File{{Path: "/x", Data: []byte{}}, {Path: "/x", Data: []byte{}}}},
		{"file as parent", []File{{Path: "/x", Data: []byte{}}, {Path: "/x/y", Data: []byte{}}}},
		{"missing source", []File{{Path: "/x", Source: "/nonexistent/trellis"}}},
		{"nothing", []File{{Path: "/x"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := LayerTar(tc.files, Epoch); err == nil {
				t.Fatal("want error")
			}
		})
	}
}
