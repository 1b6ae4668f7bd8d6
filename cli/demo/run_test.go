package demo

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// binDir writes the three binaries as shell scripts with the given bodies.
func binDir(t *testing.T, controller, proxy, app string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range map[string]string{ControllerBinary: controller, ProxyBinary: proxy, AppBinary: app} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runDemo runs the demo with its temporary directory under a fresh TMPDIR,
// which it returns so the test can check it was cleaned.
func runDemo(t *testing.T, ctx context.Context, opts Options) (stdout, stderr string, err error) {
	t.Helper()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	var out, errOut bytes.Buffer
	opts.Stdout, opts.Stderr = &out, &errOut
	if opts.StopGrace == 0 {
		opts.StopGrace = time.Second
	}
	err = Run(ctx, opts)
	entries, rerr := os.ReadDir(tmp)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if len(entries) != 0 && !opts.Keep {
		t.Errorf("work dir left behind: %v", entries)
	}
	return out.String(), errOut.String(), err
}

func TestRunReportsDyingController(t *testing.T) {
	bins := binDir(t, `echo "loading $4"; echo "fatal: cannot open store" >&2; exit 3`, "exec sleep 60", "exec sleep 60")
	_, _, err := runDemo(t, context.Background(), Options{BinDir: bins})
	if err == nil {
		t.Fatal("demo succeeded with a dying controller")
	}
	for _, want := range []string{"trellis-controller", "exit status 3", "fatal: cannot open store"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

func TestRunReadinessTimeoutLeavesNothing(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	bins := binDir(t, fmt.Sprintf("echo $$ > %s; echo waiting for nothing; exec sleep 60", pidFile), "exec sleep 60", "exec sleep 60")
	_, _, err := runDemo(t, context.Background(), Options{BinDir: bins, ReadyTimeout: 500 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "trellis-controller not ready after 500ms") || !strings.Contains(err.Error(), "waiting for nothing") {
		t.Fatalf("err = %v, want a readiness timeout naming the controller with its log", err)
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 {
		t.Fatalf("bad pid %q", b)
	}
	// Run reaps its children before returning, so the pid is gone.
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("controller %d still running after Run returned", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

func TestRunInterruptedDuringStartIsClean(t *testing.T) {
	bins := binDir(t, "exec sleep 60", "exec sleep 60", "exec sleep 60")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(300 * time.Millisecond)
		cancel()
	}()
	_, stderr, err := runDemo(t, ctx, Options{BinDir: bins})
	if err != nil {
		t.Errorf("Ctrl-C during start: %v, want a clean stop", err)
	}
	if !strings.Contains(stderr, "stopped") {
		t.Errorf("stderr %q does not say it stopped", stderr)
	}
}

func TestRunKeep(t *testing.T) {
	bins := binDir(t, "exit 1", "exit 0", "exit 0")
	_, stderr, err := runDemo(t, context.Background(), Options{BinDir: bins, Keep: true})
	if err == nil {
		t.Fatal("demo succeeded with a dying controller")
	}
	_, dir, ok := strings.Cut(stderr, "work dir kept: ")
	if !ok {
		t.Fatalf("stderr %q does not name the kept dir", stderr)
	}
	dir = strings.TrimSpace(dir)
	for _, p := range []string{"mesh.yaml", "state", "logs/controller.log", "tokens/web.token"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("kept dir lacks %s: %v", p, err)
		}
	}
}

func TestRunBadOptions(t *testing.T) {
	for _, opts := range []Options{
		{Output: "wide"},
		{Interval: time.Millisecond},
		{Duration: -time.Second},
		{Fail: map[string]float64{"db": 0.5}},
	} {
		if err := Run(context.Background(), opts); err == nil {
			t.Errorf("Run(%+v) accepted bad options", opts)
		}
	}
}
