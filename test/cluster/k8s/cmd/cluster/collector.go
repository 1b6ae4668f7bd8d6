package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/test/cluster/k8s/internal/ociimage"
)

// The trace collector of the tracing suite: Jaeger, pinned in the
// test-only module test/collector (built with the flags test/harness uses,
// so one Go build cache serves both), with test/collector/jaeger.yaml as
// /etc/jaeger/config.yaml (OTLP/gRPC on 4317, the query API on 16686).
const (
	collectorVersion = "v1.75.0"
	collectorImage   = "trellis.local/jaeger:" + collectorVersion
	collectorPkg     = "github.com/jaegertracing/jaeger/cmd/jaeger"
)

// collectorImageTar builds Jaeger and its image once per test/collector
// module graph, config and Go version, kept in the cluster cache, and
// returns the image tarball; with build false, "" when it is not built yet.
func (h *harness) collectorImageTar(ctx context.Context, build bool) (string, error) {
	dir := filepath.Join(h.modDir, "..", "..", "collector")
	gover, err := run(ctx, "go", "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	key, err := fileHash(filepath.Join(dir, "go.mod"), filepath.Join(dir, "go.sum"), filepath.Join(dir, "jaeger.yaml"))
	if err != nil {
		return "", err
	}
	key = key[:16] + "-" + strings.TrimSpace(gover)
	tar := h.cacheDir("images", "jaeger-"+key+".tar")
	if _, err := os.Stat(tar); err == nil {
		return tar, nil
	}
	if !build {
		return "", nil
	}
	bin := h.cacheDir("images", "jaeger-"+key)
	h.log.Info("building Jaeger (cold: about 5 to 13 minutes on 2 cores)", "version", collectorVersion)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin, collectorPkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w", collectorPkg, err)
	}
	h.log.Info("built Jaeger", "took", time.Since(start).Round(time.Second))
	if _, err := ociimage.Build(ociimage.Spec{
		Ref: collectorImage,
		Files: []ociimage.File{
			{Path: "/jaeger", Source: bin},
			{Path: "/etc/jaeger/config.yaml", Source: filepath.Join(dir, "jaeger.yaml"), Mode: 0o644},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		},
		Entrypoint: []string{"/jaeger"},
		Cmd:        []string{"--config", "/etc/jaeger/config.yaml"},
		User:       "65532:65532",
	}, tar); err != nil {
		return "", err
	}
	os.Remove(bin)
	return tar, nil
}
