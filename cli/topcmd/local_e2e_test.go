package topcmd

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/viz/localtap"
)

// TestTopLocalDemo: `trellis top --local -o json --limit` against a real
// `trellis demo` (its controller's tap API, its proxies) ends by itself
// with rows of the demo's traffic: web's requests to books (outbound, as
// web's proxy saw them) and web serving the load generator (inbound, by
// the caller's verified identity).
func TestTopLocalDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the demo")
	}
	bin := buildTrellis(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "demo", "--bin-dir", bin, "--rps", "30", "--duration", "3m", "--interval", "1m")
	demo.Env = append(os.Environ(), "TMPDIR="+t.TempDir())
	errs, err := demo.StderrPipe() // where the demo says its work dir
	if err != nil {
		t.Fatal(err)
	}
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = demo.Process.Signal(os.Interrupt); _ = demo.Wait() }()
	dir, logs := workDir(t, errs)
	start := time.Now()
	for {
		if _, err := localtap.Open(dir); err == nil {
			break
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("no tap API info in %s after 1 min; demo stderr:\n%s", dir, logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	top := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "top", "workload/web", "-n", "demo", "--local-dir", dir,
		"-o", "json", "--limit", "60", "--refresh", "1s")
	b, err := top.CombinedOutput()
	if err != nil {
		t.Fatalf("trellis top: %v\n%s", err, b)
	}
	t.Logf("trellis top --limit 60 ended %s after the demo was up", time.Since(start).Round(100*time.Millisecond))
	checkWebRows(t, b)
}

func checkWebRows(t *testing.T, out []byte) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var last Snapshot
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last snapshot: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, r := range last.Rows {
		switch {
		case r.Direction == "outbound" && r.Destination == "books.demo:80" && r.Count > 0 && r.SuccessRate > 0:
			seen["web -> books"] = true
		case r.Direction == "inbound" && r.Source == "loadgen.demo" && r.Count > 0 && r.SuccessRate > 0:
			seen["loadgen -> web"] = true
		}
	}
	if last.Ended != "ok" || !seen["web -> books"] || !seen["loadgen -> web"] {
		t.Errorf("want the tap ended ok with web's rows (outbound to books, inbound from loadgen), got %v:\n%s", seen, lines[len(lines)-1])
	}
}

// workDir finds "trellis demo: work dir DIR" in the demo's stderr, waits
// for "demo application running" (everything is up), and keeps reading
// the rest (returned by logs) so the demo never blocks.
func workDir(t *testing.T, r io.Reader) (string, func() string) {
	sc := bufio.NewScanner(r)
	var mu sync.Mutex
	var rest strings.Builder
	logs := func() string { mu.Lock(); defer mu.Unlock(); return rest.String() }
	dir := ""
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "trellis demo: work dir "); ok {
			dir = d
		}
		if dir != "" && strings.HasPrefix(sc.Text(), "demo application running") {
			go func() {
				for sc.Scan() {
					mu.Lock()
					rest.WriteString(sc.Text() + "\n")
					mu.Unlock()
				}
			}()
			return dir, logs
		}
	}
	t.Fatalf("the demo never said its work dir (%q) and that it runs", dir)
	return "", logs
}

// buildTrellis builds what `trellis demo` runs into a temporary directory.
func buildTrellis(t *testing.T) string {
	t.Helper()
	root, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "build", "-o", bin+string(filepath.Separator),
		"./cmd/trellis", "./cmd/trellis-proxy", "./cmd/trellis-controller", "./cmd/trellis-demo-app")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return bin
}
