package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/bench/loadgen"
)

// startTestUpstream runs the upstream in this process until the test ends.
func startTestUpstream(t *testing.T) upstreamAddrs {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan upstreamAddrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- runUpstream(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), func(a upstreamAddrs) { addrc <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("upstream: %v", err)
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-errc:
		t.Fatalf("upstream: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("upstream did not start")
	}
	return upstreamAddrs{}
}

// sendBoth sends 100 HTTP/1.1 and 100 gRPC requests and wants all to pass.
func sendBoth(t *testing.T, httpAddr, grpcAddr string) {
	t.Helper()
	ws, closer := loadgen.HTTPWorkers(loadgen.HTTPTarget{Addr: httpAddr}, 4)
	defer closer.Close()
	cfg := loadgen.Config{Rate: 1000, Duration: 100 * time.Millisecond}
	res, err := loadgen.Run(context.Background(), cfg, ws)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 100 {
		t.Errorf("HTTP to %s: %d of 100 completed, first error %q", httpAddr, res.Completed, res.FirstError)
	}
	gws, cc, err := loadgen.GRPCWorkers(loadgen.GRPCTarget{Addr: grpcAddr, Payload: bodySize}, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	res, err = loadgen.Run(context.Background(), cfg, gws)
	if err != nil {
		t.Fatal(err)
	}
	if res.Completed != 100 {
		t.Errorf("gRPC to %s: %d of 100 completed, first error %q", grpcAddr, res.Completed, res.FirstError)
	}
}

func TestUpstreamServesHTTPAndGRPCOnOnePort(t *testing.T) {
	addr := startTestUpstream(t).http
	resp, err := http.Get("http://" + addr + "/anything")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || len(body) != bodySize {
		t.Fatalf("GET: status %d, %d bytes, err %v; want 200 and %d bytes", resp.StatusCode, len(body), err, bodySize)
	}
	sendBoth(t, addr, addr)
}

func TestNginxYardstick(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nginx processes")
	}
	const bin = "/usr/sbin/nginx"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no nginx: %v", err)
	}
	addr := startTestUpstream(t)
	dir := t.TempDir()
	ps := &procs{dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer ps.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := startNginx(ctx, ps, nginxOptions{bin: bin}, dir, addr)
	if err != nil {
		t.Fatal(err)
	}
	sendBoth(t, n.httpAddr, n.grpcAddr)

	pids := []int{n.front.pid(), n.back.pid()}
	ps.Stop()
	for _, pid := range pids {
		// Stop waited for each group leader, so its group must be empty now.
		if err := syscall.Kill(-pid, 0); err != syscall.ESRCH {
			t.Errorf("process group %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
}

func TestMeshStartErrorsAreClear(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	ps := &procs{dir: dir, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	defer ps.Stop()

	_, err := startMesh(ctx, ps, meshOptions{binDir: filepath.Join(dir, "nothing"), gomaxprocs: 1}, dir, upstreamAddrs{http: "127.0.0.1:1", opaque: "127.0.0.1:2"})
	if err == nil || !strings.Contains(err.Error(), "make build") {
		t.Fatalf("missing binaries: err = %v, want a hint to run make build", err)
	}

	// A controller that dies at once: the error names it and shows its log.
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho 'controller exploded: bad store file' >&2\nexit 3\n"
	for _, name := range []string{"trellis-controller", "trellis-proxy"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	_, err = startMesh(ctx, ps, meshOptions{binDir: bin, gomaxprocs: 1}, dir, upstreamAddrs{http: "127.0.0.1:1", opaque: "127.0.0.1:2"})
	if err == nil {
		t.Fatal("startMesh succeeded with a controller that exits")
	}
	for _, want := range []string{"controller", "exit status 3", "controller exploded: bad store file"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	store, err := os.ReadFile(filepath.Join(dir, "mesh.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: echo", "namespace: bench", "targetPort: 1", "protocol: \"\"", "name: client", "targetPort: 2", "protocol: opaque"} {
		if !strings.Contains(string(store), want) {
			t.Errorf("store file lacks %q:\n%s", want, store)
		}
	}
}
