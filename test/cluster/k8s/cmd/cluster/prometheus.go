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

// The Prometheus of `trellis viz install` (install/vizk8s.DefaultImage),
// built from its Go module as CoreDNS is and packed into an image named as
// a user pulls it. Only the Kubernetes service discovery is compiled in
// (Prometheus's own build tags): the cloud SDKs would double the build.
// Debian's package (2.42) was the faster option but is built without
// kubernetes_sd, which the scrape configuration needs.
const (
	prometheusModule  = "github.com/prometheus/prometheus/cmd/prometheus"
	prometheusVersion = "v0.316.0" // Prometheus 3.16.0
	prometheusImage   = "prom/prometheus:v3.16.0"
	prometheusTags    = "remove_all_sd,enable_kubernetes_sd"
)

// prometheusTar returns the cached image tarball, building Prometheus on
// first use (cold: about 9 minutes on 2 shared cores); with build false,
// "" when it is not built yet.
func (h *harness) prometheusTar(ctx context.Context, build bool) (string, error) {
	gover, err := run(ctx, "go", "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	bin := h.cacheDir("prometheus-"+prometheusVersion+"-"+strings.TrimSpace(gover), "prometheus")
	if _, err := os.Stat(bin); err != nil {
		if !build {
			return "", nil
		}
		h.log.Info("building Prometheus (cold: about 9 minutes on 2 cores)", "version", prometheusVersion)
		start := time.Now()
		gobin := filepath.Dir(bin) + ".tmp"
		os.RemoveAll(gobin)
		cmd := exec.CommandContext(ctx, "go", "install", prometheusModule+"@"+prometheusVersion)
		cmd.Dir = os.TempDir() // outside any module: go install pkg@version
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+gobin, "GOFLAGS=-trimpath -tags="+prometheusTags)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("go install prometheus: %w", err)
		}
		if err := os.Rename(gobin, filepath.Dir(bin)); err != nil {
			return "", err
		}
		h.log.Info("built Prometheus", "took", time.Since(start).Round(time.Second))
	}
	k, err := fileHash(bin)
	if err != nil {
		return "", err
	}
	out := h.cacheDir("images", "prometheus-"+k+".tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	_, err = ociimage.Build(ociimage.Spec{
		Ref: prometheusImage,
		Files: []ociimage.File{
			{Path: "/bin/prometheus", Source: bin},
			{Path: "/etc/prometheus", Dir: true},
			{Path: "/prometheus", Dir: true, Mode: 0o1777},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		},
		Entrypoint: []string{"/bin/prometheus"},
		User:       "65534:65534",
	}, out)
	return out, err
}
