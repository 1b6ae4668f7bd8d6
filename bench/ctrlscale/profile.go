package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const controllerPkg = "github.com/trellis-mesh/trellis/cmd/trellis-controller"

// pprofInit is added to the controller's main package with `go build
// -overlay` when -profile is on, so the benchmark can take a heap profile of
// the real binary without the controller shipping a profiling endpoint.
const pprofInit = `package main

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	path := os.Getenv("TRELLIS_BENCH_PPROF")
	if path == "" {
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/debug/pprof/", http.DefaultServeMux)
	_ = os.WriteFile(path, []byte(l.Addr().String()), 0o600)
	go func() { _ = http.Serve(l, mux) }()
}
`

// buildProfiled builds the controller with pprofInit overlaid.
func buildProfiled(ctx context.Context, dir string) (string, error) {
	pkgDir, err := exec.CommandContext(ctx, "go", "list", "-f", "{{.Dir}}", controllerPkg).Output()
	if err != nil {
		return "", fmt.Errorf("go list %s: %w", controllerPkg, err)
	}
	src := filepath.Join(dir, "zz_bench_pprof.go")
	if err := os.WriteFile(src, []byte(pprofInit), 0o600); err != nil {
		return "", err
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(strings.TrimSpace(string(pkgDir)), "zz_bench_pprof.go"): src,
	}})
	ov := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ov, overlay, 0o600); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "trellis-controller-pprof")
	b, err := exec.CommandContext(ctx, "go", "build", "-overlay", ov, "-o", out, controllerPkg).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build -overlay: %w\n%s", err, b)
	}
	return out, nil
}

// heapProfile saves the controller's heap profile to path and returns the
// top of `go tool pprof -top` (in-use space).
func heapProfile(ctx context.Context, addrFile, path string) (string, error) {
	addr, err := os.ReadFile(addrFile)
	if err != nil {
		return "", fmt.Errorf("pprof address: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+string(addr)+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("heap profile: %w", err)
	}
	defer resp.Body.Close()
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	top, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-sample_index=inuse_space", "-nodecount=25", path).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %w", err)
	}
	return string(top), nil
}
