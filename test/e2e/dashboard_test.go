package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/bench/procstat"
	"github.com/trellis-mesh/trellis/test/browser"
)

// TestDashboardLocalDemo runs the real `trellis demo --dashboard` (the
// controller, a proxy per workload, the demo application and its load)
// and drives the dashboard in a real headless Chromium: every workload
// with live figures, the edges graph, a live tap, the identities; no
// console error. Screenshots go to docs/images with
// TRELLIS_UPDATE_SCREENSHOTS=1. It also logs the trellis process's RSS
// with the dashboard serving (the figure in docs/observability.md).
func TestDashboardLocalDemo(t *testing.T) {
	requireBinaries(t)
	b := browser.Start(t) // skips here (fails in CI) without chromium
	bin := buildDemoApp(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "demo", "--dashboard", "--no-browser",
		"--dashboard-port", "0", "--rps", "20", "--interval", "5s")
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	d := browser.RunDashboard(t, cmd, 2*time.Minute)
	rssBefore := rss(d.Pid)

	browser.CheckDashboard(t, b, strings.TrimSuffix(d.URL, "/"), browser.DashboardExpect{
		Workloads:  []string{"loadgen", "web", "books-v1", "books-v2", "authors"},
		Serving:    []string{"web", "books-v1", "books-v2", "authors"},
		Edges:      4, // loadgen -> web -> books (v1, v2) -> authors, every hop mTLS
		TapQuery:   "target=web",
		ShotPrefix: "dashboard-local-",
	})
	t.Logf("trellis process (demo supervisor, tables and dashboard): %s before the browser; %s after it used every page and a tap",
		rssBefore, rss(d.Pid))
	if err := d.Stop(30 * time.Second); err != nil {
		t.Errorf("trellis demo after Ctrl-C: %v", err)
	}
}

// buildDemoApp builds trellis-demo-app beside the harness's binaries
// (trellis demo looks for it there).
func buildDemoApp(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(bins.CLI)
	if _, err := os.Stat(filepath.Join(dir, "trellis-demo-app")); err == nil {
		return dir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	out, err := exec.CommandContext(ctx, "go", append(args, "github.com/trellis-mesh/trellis/cmd/trellis-demo-app")...).CombinedOutput()
	if err != nil {
		t.Fatalf("go build trellis-demo-app: %v\n%s", err, out)
	}
	return dir
}

// rss is a process's resident set and its peak (VmRSS, VmHWM) in MiB.
func rss(pid int) string {
	m, err := procstat.ReadMemory(pid)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("RSS %.1f MiB (peak %.1f MiB)", float64(m.RSS)/(1<<20), float64(m.HWM)/(1<<20))
}
