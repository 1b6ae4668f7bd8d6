package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/test/cluster/k8s/internal/ociimage"
)

const (
	k8sVersion     = "v1.36.3"
	corednsVersion = "v1.15.0"

	pauseImage   = "trellis.local/pause:1"
	corednsImage = "trellis.local/coredns:" + corednsVersion
	smokeImage   = "trellis.local/smokeget:1"
)

// binaries are the cached build outputs one `up` needs.
type binaries struct {
	k8s        string // multi-call Kubernetes binary
	coredns    string
	pauseTar   string
	corednsTar string
	smokeTar   string
}

// ldflags stamps the version, or kubectl cannot parse the server's.
func ldflags() string {
	x := func(k, v string) string { return "-X " + k + "=" + v }
	return strings.Join([]string{
		"-s", "-w",
		x("k8s.io/component-base/version.gitVersion", k8sVersion),
		x("k8s.io/component-base/version.gitMajor", "1"),
		x("k8s.io/component-base/version.gitMinor", "36"),
		x("k8s.io/component-base/version.gitTreeState", "clean"),
		// Fixed, so the build is reproducible and the cache key stable.
		x("k8s.io/component-base/version.buildDate", "1970-01-01T00:00:00Z"),
		x("k8s.io/client-go/pkg/version.gitVersion", k8sVersion),
		x("k8s.io/client-go/pkg/version.gitMajor", "1"),
		x("k8s.io/client-go/pkg/version.gitMinor", "36"),
	}, " ")
}

// buildKey is what a cached binary depends on: the module graph (go.sum),
// the sources of this module's commands and the Go toolchain.
func (h *harness) buildKey(ctx context.Context, extra ...string) (string, error) {
	sum := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(h.modDir, f))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(sum, "%s %d\n", f, len(b))
		sum.Write(b)
	}
	gover, err := run(ctx, "go", "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	fmt.Fprintln(sum, strings.TrimSpace(gover))
	for _, e := range extra {
		fmt.Fprintln(sum, e)
	}
	return hex.EncodeToString(sum.Sum(nil))[:16], nil
}

func fileHash(paths ...string) (string, error) {
	sum := sha256.New()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(sum, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(sum.Sum(nil))[:16], nil
}

// goBuild builds pkg of this module to out (via a temporary name, so an
// interrupted build never leaves a half-written cached binary).
func (h *harness) goBuild(ctx context.Context, pkg, out string, flags string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", flags, "-o", tmp, pkg)
	cmd.Dir = h.modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w", pkg, err)
	}
	return os.Rename(tmp, out)
}

func (h *harness) buildAll(ctx context.Context) (binaries, error) {
	var b binaries
	src, err := fileHash(filepath.Join(h.modDir, "cmd", "k8s-all", "main.go"))
	if err != nil {
		return b, err
	}
	key, err := h.buildKey(ctx, src, ldflags())
	if err != nil {
		return b, err
	}
	b.k8s = h.cacheDir("k8s-"+key, "k8s-all")
	if _, err := os.Stat(b.k8s); err != nil {
		h.log.Info("building Kubernetes (cold: about 5 minutes on 2 cores)", "version", k8sVersion, "out", b.k8s)
		start := time.Now()
		if err := h.goBuild(ctx, "./cmd/k8s-all", b.k8s, ldflags()); err != nil {
			return b, err
		}
		h.log.Info("built Kubernetes", "took", time.Since(start).Round(time.Second))
	}

	gover, err := run(ctx, "go", "env", "GOVERSION")
	if err != nil {
		return b, err
	}
	b.coredns = h.cacheDir("coredns-"+corednsVersion+"-"+strings.TrimSpace(gover), "coredns")
	if _, err := os.Stat(b.coredns); err != nil {
		h.log.Info("building CoreDNS (about 2 minutes)", "version", corednsVersion)
		start := time.Now()
		gobin := filepath.Dir(b.coredns) + ".tmp"
		os.RemoveAll(gobin)
		cmd := exec.CommandContext(ctx, "go", "install", "github.com/coredns/coredns@"+corednsVersion)
		cmd.Dir = os.TempDir() // outside any module: go install pkg@version
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+gobin, "GOFLAGS=-trimpath")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return b, fmt.Errorf("go install coredns: %w", err)
		}
		if err := os.Rename(gobin, filepath.Dir(b.coredns)); err != nil {
			return b, err
		}
		h.log.Info("built CoreDNS", "took", time.Since(start).Round(time.Second))
	}

	// Small helper images: rebuilt from source when it changes.
	for _, img := range []struct {
		pkg, ref string
		out      *string
	}{
		{"pause", pauseImage, &b.pauseTar},
		{"smokeget", smokeImage, &b.smokeTar},
	} {
		srcHash, err := fileHash(filepath.Join(h.modDir, "cmd", img.pkg, "main.go"))
		if err != nil {
			return b, err
		}
		k, err := h.buildKey(ctx, srcHash)
		if err != nil {
			return b, err
		}
		*img.out = h.cacheDir("images", img.pkg+"-"+k+".tar")
		if _, err := os.Stat(*img.out); err == nil {
			continue
		}
		bin := h.cacheDir("images", img.pkg+"-"+k)
		if err := h.goBuild(ctx, "./cmd/"+img.pkg, bin, "-s -w"); err != nil {
			return b, err
		}
		if _, err := ociimage.Build(ociimage.Spec{
			Ref:        img.ref,
			Files:      []ociimage.File{{Path: "/" + img.pkg, Source: bin}},
			Entrypoint: []string{"/" + img.pkg},
		}, *img.out); err != nil {
			return b, err
		}
		os.Remove(bin)
	}

	k, err := fileHash(b.coredns)
	if err != nil {
		return b, err
	}
	b.corednsTar = h.cacheDir("images", "coredns-"+k+".tar")
	if _, err := os.Stat(b.corednsTar); err != nil {
		if _, err := ociimage.Build(ociimage.Spec{
			Ref:        corednsImage,
			Files:      []ociimage.File{{Path: "/coredns", Source: b.coredns}, {Path: "/etc/coredns", Dir: true}},
			Entrypoint: []string{"/coredns"},
		}, b.corednsTar); err != nil {
			return b, err
		}
	}
	return b, nil
}
