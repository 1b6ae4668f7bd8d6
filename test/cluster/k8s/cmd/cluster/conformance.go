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

// The Gateway API conformance suite's mesh tests (test/conformance) run
// their apps from echoImage: Istio's echo server, with its client beside
// it for the suite to exec into. Both are built from the test-only module
// test/conformance/echo (istio.io/istio is served only as a pseudo-version:
// it publishes no tagged Go module) and packed as Istio's
// pkg/test/echo/docker/Dockerfile.app does: /usr/local/bin/{server,client},
// the server the entrypoint, Istio's test certificate at /cert.crt and
// /cert.key (the manifests' --crt and --key), user 1338.
const (
	// The name test/conformance's mesh manifests use (TestEchoImageName
	// there fails when a suite bump changes it).
	echoImage = "registry.k8s.io/gateway-api/echo-advanced:v1.5.1"
	echoPkg   = "istio.io/istio/pkg/test/echo/cmd/"
)

// conformanceImages builds the echo image (cached per module graph and Go
// version) and imports it into the cluster, which must be up.
func (h *harness) conformanceImages(ctx context.Context) error {
	tar, err := h.echoImageTar(ctx)
	if err != nil {
		return err
	}
	if ok, why := h.isUp(ctx); !ok {
		return fmt.Errorf("the cluster is not up: %s", why)
	}
	if err := h.importImages(ctx, []string{tar}); err != nil {
		return err
	}
	h.log.Info("imported the conformance suite's image", "image", echoImage)
	return nil
}

func (h *harness) echoImageTar(ctx context.Context) (string, error) {
	dir := filepath.Join(h.modDir, "..", "..", "conformance", "echo")
	gover, err := run(ctx, "go", "env", "GOVERSION")
	if err != nil {
		return "", err
	}
	key, err := fileHash(filepath.Join(dir, "go.mod"), filepath.Join(dir, "go.sum"))
	if err != nil {
		return "", err
	}
	key = key[:16] + "-" + strings.TrimSpace(gover)
	tar := h.cacheDir("images", "echo-advanced-"+key+".tar")
	if _, err := os.Stat(tar); err == nil {
		return tar, nil
	}
	bin := h.cacheDir("images", "echo-advanced-"+key+".tmp")
	os.RemoveAll(bin)
	defer os.RemoveAll(bin)
	h.log.Info("building Istio's echo server and client (cold: about 2 minutes on 2 cores)")
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin+"/", echoPkg+"server", echoPkg+"client")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s{server,client}: %w", echoPkg, err)
	}
	h.log.Info("built the echo binaries", "took", time.Since(start).Round(time.Second))
	list := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", "istio.io/istio")
	list.Dir = dir
	list.Env = append(os.Environ(), "GOWORK=off")
	istio, err := list.Output()
	if err != nil {
		return "", fmt.Errorf("locating istio.io/istio: %w", err)
	}
	certs := filepath.Join(strings.TrimSpace(string(istio)), "tests", "testdata", "certs", "dns")
	_, err = ociimage.Build(ociimage.Spec{
		Ref: echoImage,
		Files: []ociimage.File{
			{Path: "/usr/local/bin/server", Source: filepath.Join(bin, "server")},
			{Path: "/usr/local/bin/client", Source: filepath.Join(bin, "client")},
			{Path: "/cert.crt", Source: filepath.Join(certs, "cert-chain.pem"), Mode: 0o644},
			{Path: "/cert.key", Source: filepath.Join(certs, "key.pem"), Mode: 0o644},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		},
		Entrypoint: []string{"/usr/local/bin/server"},
		// The suite execs `client ...` in the pod: found on PATH.
		Env:  []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		User: "1338:1338",
	}, tar+".tmp")
	if err != nil {
		return "", err
	}
	return tar, os.Rename(tar+".tmp", tar)
}
