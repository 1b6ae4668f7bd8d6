// Package ociimage builds single-layer container images from local files,
// without Docker, as docker-archive tarballs that `ctr images import`,
// `docker load`, `kind load image-archive` and `k3d image import` accept.
// Builds are reproducible: entries are sorted, owned by root and stamped with
// one fixed time, so the same inputs give the same image digest.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Epoch is the timestamp every file and the image config carry unless the
// caller picks another (SOURCE_DATE_EPOCH style).
var Epoch = time.Unix(0, 0).UTC()

// File is one entry of the image's only layer.
type File struct {
	// Path inside the image, absolute ("/usr/sbin/iptables").
	Path string
	// Source on the host for a regular file; empty for a directory or symlink.
	Source string
	// Data is used instead of Source when non-nil.
	Data []byte
	// Link makes the entry a symlink to this target.
	Link string
	// Dir makes the entry a directory.
	Dir bool
	// Mode is the permission bits; 0 means 0755 for executables and dirs.
	Mode int64
}

// Spec describes one image.
type Spec struct {
	Ref        string // e.g. ghcr.io/trellis-mesh/trellis-proxy:dev
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	Created    time.Time // zero means Epoch
}

// Build writes the image described by spec to out as a docker-archive tarball
// and returns the image digest.
func Build(spec Spec, out string) (v1.Hash, error) {
	ref, err := name.ParseReference(spec.Ref)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image reference %q: %w", spec.Ref, err)
	}
	created := spec.Created
	if created.IsZero() {
		created = Epoch
	}
	layerTar, err := LayerTar(spec.Files, created)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: %w", spec.Ref, err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: layer: %w", spec.Ref, err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: append layer: %w", spec.Ref, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: config: %w", spec.Ref, err)
	}
	cf = cf.DeepCopy()
	cf.Architecture = "amd64"
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = spec.Entrypoint
	cf.Config.Cmd = spec.Cmd
	cf.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"}, spec.Env...)
	cf.Config.User = spec.User
	cf.Config.WorkingDir = spec.WorkingDir
	cf.History = []v1.History{{Created: v1.Time{Time: created}, CreatedBy: "trellis test/cluster ociimage"}}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: set config: %w", spec.Ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("%s: digest: %w", spec.Ref, err)
	}
	tmp := out + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("%s: write %s: %w", spec.Ref, out, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return v1.Hash{}, fmt.Errorf("%s: %w", spec.Ref, err)
	}
	return digest, nil
}

// LayerTar renders files as an uncompressed tar with parent directories
// added, entries sorted by path and every header normalised.
func LayerTar(files []File, mtime time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p, err := cleanPath(f.Path)
		if err != nil {
			return nil, err
		}
		f.Path = p
		if prev, ok := entries[p]; ok && !(prev.Dir && f.Dir) {
			return nil, fmt.Errorf("duplicate path %s", p)
		}
		entries[p] = f
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			if e, ok := entries[d]; ok {
				if !e.Dir {
					return nil, fmt.Errorf("%s is both a file and a parent directory", d)
				}
				continue
			}
			entries[d] = File{Path: d, Dir: true}
		}
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	sort.Strings(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := entries[p]
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			ModTime: mtime,
			Uid:     0,
			Gid:     0,
			Format:  tar.FormatPAX,
		}
		var data []byte
		switch {
		case f.Dir:
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			hdr.Mode = orDefault(f.Mode, 0o755)
		case f.Link != "":
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = f.Link
			hdr.Mode = 0o777
		default:
			data = f.Data
			if data == nil {
				if f.Source == "" {
					return nil, fmt.Errorf("%s: no source, data, link or dir", p)
				}
				b, err := os.ReadFile(f.Source)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", p, err)
				}
				data = b
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(data))
			hdr.Mode = orDefault(f.Mode, 0o755)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if data != nil {
			if _, err := tw.Write(data); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func orDefault(mode, def int64) int64 {
	if mode == 0 {
		return def
	}
	return mode
}

func cleanPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q: must be absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", errors.New("image path: / is implicit")
	}
	return c, nil
}
