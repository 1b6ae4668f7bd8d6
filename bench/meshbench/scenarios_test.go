package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// TestMain lets the test binary be meshbench's upstream: the bench starts
// its upstream by re-executing its own executable with "upstream".
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "upstream" {
		os.Exit(upstreamMain())
	}
	os.Exit(m.Run())
}

// TestNewScenariosRun runs every new scenario for about a second over all
// three paths with real proxies and nginx on loopback, so a change that
// breaks a scenario (or the mesh's opaque, churn or idle paths it drives)
// fails here. It measures nothing worth reading: figures are printed by
// meshbench itself, never asserted.
func TestNewScenariosRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the mesh binaries and starts nginx")
	}
	const nginxBin = "/usr/sbin/nginx"
	if _, err := os.Stat(nginxBin); err != nil {
		t.Skipf("nginx, the yardstick, is missing (%v): install nginx-light to run the scenarios", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	start := time.Now()
	bins, err := harness.Build(ctx, dir, raceEnabled)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built the mesh binaries in %v", time.Since(start).Round(time.Millisecond))

	const idleConns = 200 // the race detector allows 8128 goroutines per process
	o := options{
		kinds: []string{kindBig, kindOpaque, kindChurnHTTP, kindChurnTCP, kindIdle},
		paths: []string{pathDirect, pathMesh, pathNginx}, passes: 1, conns: 4,
		duration: time.Second, extraDuration: time.Second, extraWarmup: 300 * time.Millisecond,
		bigRate: 10, bigConns: 2, churnRate: 100, churnConns: 10, idleConns: idleConns,
		proxyGOMAXPROCS: 1, binDir: dir, nginxBin: nginxBin, proxyLogLevel: "warn",
	}
	if bins.Proxy == "" {
		t.Fatal("harness.Build returned no proxy")
	}
	var logs bytes.Buffer
	rep, err := runBench(ctx, o, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, logs.String())
	}
	checkScenarioReport(t, rep, idleConns)
	var out bytes.Buffer
	printReport(&out, o, rep)
	t.Logf("report (figures meaningless at this length and under -race):\n%s", out.String())
	t.Run("routes", func(t *testing.T) { runRoutesSmoke(ctx, t, dir) })
}

// runRoutesSmoke runs `meshbench routes` for one short round of every
// config with the binaries just built: every config's routes must reach
// the client proxy (its marker seen) and every request pass; runRoutes
// fails otherwise.
func runRoutesSmoke(ctx context.Context, t *testing.T, binDir string) {
	o, err := parseRoutesFlags([]string{"-rounds", "1", "-duration", "500ms", "-warmup", "100ms", "-rate", "100", "-conns", "2", "-bin", binDir}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	start := time.Now()
	rep, err := runRoutes(ctx, o, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, logs.String())
	}
	for i, c := range rep.configs {
		if len(rep.cells[i]) != 1 || rep.cells[i][0].Completed == 0 {
			t.Errorf("%s: no completed cell", c.name)
		}
	}
	var out bytes.Buffer
	printRoutes(&out, o, rep)
	t.Logf("routes run in %v (figures meaningless):\n%s", time.Since(start).Round(time.Millisecond), out.String())
}

func checkScenarioReport(t *testing.T, rep report, idleConns int64) {
	t.Helper()
	for _, s := range rep.Skipped {
		if !strings.Contains(s, "stream module") && !strings.Contains(s, "direct has none") {
			t.Errorf("unexpected skip: %s", s)
		}
	}
	if len(rep.Scenarios) != 5 {
		t.Fatalf("%d scenarios reported, want 5", len(rep.Scenarios))
	}
	for _, sr := range rep.Scenarios {
		for _, p := range sr.Paths {
			skipped := p.Completed+p.Errors+p.Unsent == 0
			if skipped {
				continue // listed in rep.Skipped, checked above
			}
			if p.Errors+p.Unsent > 0 || p.Completed == 0 {
				t.Errorf("%s over %s: %d completed, %d failed, %d unsent; first error %q", sr.Name, p.Path, p.Completed, p.Errors, p.Unsent, p.FirstError)
			}
			if sr.Kind == kindIdle && p.Held != idleConns {
				t.Errorf("%s over %s: %d connections held, want %d", sr.Name, p.Path, p.Held, idleConns)
			}
		}
	}
	if len(rep.Targets) == 0 {
		t.Error("no target checked although mesh and nginx both ran")
	}
}
