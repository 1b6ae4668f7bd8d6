package grafana

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSubstitute(t *testing.T) {
	for in, want := range map[string]string{
		`sum(rate(x{namespace="$namespace"}[$__rate_interval]))`: `sum(rate(x{namespace=~".*"}[1m]))`,
		`x{namespace=~"$namespace",workload="$workload"}`:        `x{namespace=~".*",workload=~".*"}`,
	} {
		if got := substitute(in, DefaultVars); got != want {
			t.Errorf("substitute(%s) = %s, want %s", in, got, want)
		}
	}
	qs, err := Queries(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if strings.Contains(q.Expr, "$") {
			t.Errorf("%s/%s: a variable is left: %s", q.Dashboard, q.Panel, q.Expr)
		}
	}
}

// TestQueriesRunOnRealPrometheus: every panel's PromQL is accepted and
// run by a real Prometheus (TRELLIS_PROMETHEUS_BIN: the binary the viz
// harness builds; skipped without it). The viz suite runs Check again on
// the cluster, where the series exist.
func TestQueriesRunOnRealPrometheus(t *testing.T) {
	bin := os.Getenv("TRELLIS_PROMETHEUS_BIN")
	if bin == "" {
		t.Skip("TRELLIS_PROMETHEUS_BIN not set (the viz harness builds Prometheus)")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 15s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	out, _ := os.Create(filepath.Join(dir, "prometheus.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	url := "http://" + addr
	waitReady(t, url+"/-/ready", filepath.Join(dir, "prometheus.log"))
	res, err := Check(t.Context(), http.DefaultClient, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("%s / %s (%s): %v\n%s", r.Dashboard, r.Panel, r.RefID, r.Err, r.Expr)
		}
	}
	t.Logf("%d queries accepted by Prometheus", len(res))
}

func waitReady(t *testing.T, url, logPath string) {
	start := time.Now()
	for time.Since(start) < 60*time.Second {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("prometheus ready after %v", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("prometheus not ready after 60 s:\n%s", b)
}
