package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/test/cluster/k8s/internal/ociimage"
)

// The Prometheus of `trellis viz install` (install/vizk8s.DefaultImage): Debian's
// package, pinned, packed into an image named as a user pulls it. Debian's
// package downloads in seconds; building Prometheus from its Go module took
// 526 s cold on the 2-core machine (docs: /work/notes/viz.md), so CI uses the package.
const (
	prometheusDeb   = "prometheus=2.42.0+ds-5+deb12u1"
	prometheusImage = "prom/prometheus:v2.42.0"
)

// prometheusTar returns the cached image tarball, building it on first use
// from the Debian package (downloaded, not installed: no service starts).
func (h *harness) prometheusTar(ctx context.Context) (string, error) {
	ver := strings.SplitN(prometheusDeb, "=", 2)[1]
	out := h.cacheDir("images", "prometheus-"+ver+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	start := time.Now()
	dir := h.cacheDir("prometheus-" + ver)
	bin := filepath.Join(dir, "usr", "bin", "prometheus")
	if _, err := os.Stat(bin); err != nil {
		if err := downloadDeb(ctx, dir, prometheusDeb); err != nil {
			return "", err
		}
	}
	libs, err := lddLibs(ctx, bin)
	if err != nil {
		return "", err
	}
	files := []ociimage.File{
		{Path: "/bin/prometheus", Source: bin},
		{Path: "/etc/prometheus", Dir: true},
		{Path: "/prometheus", Dir: true, Mode: 0o1777},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
	for _, l := range libs {
		files = append(files, ociimage.File{Path: l, Source: l, Mode: 0o755})
	}
	if _, err := ociimage.Build(ociimage.Spec{
		Ref:        prometheusImage,
		Files:      files,
		Entrypoint: []string{"/bin/prometheus"},
		User:       "65534:65534",
	}, out); err != nil {
		return "", err
	}
	h.log.Info("built the Prometheus image", "image", prometheusImage, "deb", prometheusDeb, "took", time.Since(start).Round(time.Millisecond))
	return out, nil
}

// downloadDeb fetches one pinned Debian package with apt-get (updating the
// package lists once if they do not know it) and unpacks it into dir.
func downloadDeb(ctx context.Context, dir, pkg string) error {
	tmp, err := os.MkdirTemp("", "trellis-deb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	get := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %w\n%s", pkg, err, out)
		}
		return nil
	}
	if err := get(); err != nil {
		if _, uerr := run(ctx, "apt-get", "update"); uerr != nil {
			return fmt.Errorf("%w (apt-get update: %v)", err, uerr)
		}
		if err := get(); err != nil {
			return err
		}
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return fmt.Errorf("apt-get download %s: %d .deb files", pkg, len(debs))
	}
	if err := os.MkdirAll(dir+".tmp", 0o755); err != nil {
		return err
	}
	if _, err := run(ctx, "dpkg-deb", "-x", debs[0], dir+".tmp"); err != nil {
		return err
	}
	os.RemoveAll(dir)
	return os.Rename(dir+".tmp", dir)
}

// lddLibs lists the shared libraries and loader the binaries need (what
// ldd prints as absolute paths), sorted.
func lddLibs(ctx context.Context, bins ...string) ([]string, error) {
	libs := map[string]bool{}
	for _, f := range bins {
		out, err := run(ctx, "ldd", f)
		if err != nil {
			return nil, err
		}
		for _, l := range strings.Split(out, "\n") {
			for _, fl := range strings.Fields(l) {
				if strings.HasPrefix(fl, "/") {
					libs[fl] = true
				}
			}
		}
	}
	names := make([]string, 0, len(libs))
	for l := range libs {
		names = append(names, l)
	}
	sort.Strings(names)
	return names, nil
}

// copyFile copies src to dst (replaced atomically).
func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.WriteFile(dst+".tmp", b, 0o644); err != nil {
		return err
	}
	return os.Rename(dst+".tmp", dst)
}
