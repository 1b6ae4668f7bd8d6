package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// summary is the `trellis demo -o json` document, decoded independently of
// the package's own types so that a renamed field fails the test.
type summary struct {
	DurationSeconds float64 `json:"duration_seconds"`
	Workloads       []struct {
		Name        string   `json:"name"`
		SuccessRate *float64 `json:"success_rate"`
		RPS         float64  `json:"rps"`
		P50Ms       *float64 `json:"p50_ms"`
		P95Ms       *float64 `json:"p95_ms"`
		P99Ms       *float64 `json:"p99_ms"`
		Requests    int64    `json:"requests"`
	} `json:"workloads"`
	Edges []struct {
		Source       string   `json:"source"`
		Destination  string   `json:"destination"`
		PeerIdentity string   `json:"peer_identity"`
		MTLS         bool     `json:"mtls"`
		SuccessRate  *float64 `json:"success_rate"`
		RPS          float64  `json:"rps"`
		P50Ms        *float64 `json:"p50_ms"`
		P95Ms        *float64 `json:"p95_ms"`
		P99Ms        *float64 `json:"p99_ms"`
		Requests     int64    `json:"requests"`
	} `json:"edges"`
}

const spiffe = "spiffe://cluster.local/ns/demo/sa/"

// The edges the demo application makes, with the identity that must serve
// each over mTLS.
var wantEdges = []struct{ src, dst, peer string }{
	{"loadgen", "web.demo:80", spiffe + "web"},
	{"web", "books.demo:80", spiffe + "books"},
	{"books-v1", "authors.demo:80", spiffe + "authors"},
	{"books-v2", "authors.demo:80", spiffe + "authors"},
}

// buildBinaries builds the four binaries of `make build` into a temporary
// directory.
func buildBinaries(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin+string(filepath.Separator),
		"./cmd/trellis", "./cmd/trellis-proxy", "./cmd/trellis-controller", "./cmd/trellis-demo-app")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return bin
}

// runDemo runs the real `trellis demo` for 20 seconds and decodes its JSON.
func runDemo(t *testing.T, bin string, extra ...string) summary {
	t.Helper()
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"demo", "--duration", "20s", "-o", "json", "--interval", "5s"}, extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), args...)
	// Only what is beside trellis may be used, and the work dir goes where
	// the test can check it was removed.
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "PATH=/usr/bin:/bin")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("trellis demo %s stderr:\n%s", strings.Join(extra, " "), stderr.String())
	if err != nil {
		t.Fatalf("trellis demo: %v", err)
	}

	var s summary
	// Unmarshal refuses anything after the document: stdout is pure JSON.
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("stdout is not one JSON document: %v\n%s", err, stdout.String())
	}
	if s.DurationSeconds <= 0 {
		t.Errorf("duration_seconds = %v", s.DurationSeconds)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("work dir left behind in %s: %v", tmp, entries)
	}
	assertNothingLeft(t, bin)
	return s
}

// assertNothingLeft looks for any process still running a binary from bin.
func assertNothingLeft(t *testing.T, bin string) {
	t.Helper()
	procs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil || len(procs) == 0 {
		return // no procfs: nothing to look at
	}
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if strings.HasPrefix(string(b), bin+string(filepath.Separator)) {
			t.Errorf("process left behind: %s (%s)", strings.ReplaceAll(string(b), "\x00", " "), p)
		}
	}
}

func TestDemoEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end demo (builds every binary and runs the mesh for 40s) in -short mode")
	}
	bin := buildBinaries(t)

	t.Run("healthy", func(t *testing.T) {
		s := runDemo(t, bin)
		byName := map[string]int64{}
		for _, w := range s.Workloads {
			byName[w.Name] = w.Requests
			if w.Name == "loadgen" {
				continue // it serves nothing
			}
			if w.Requests == 0 {
				t.Errorf("workload %s served no requests", w.Name)
				continue
			}
			if w.SuccessRate == nil || *w.SuccessRate != 1 {
				t.Errorf("workload %s success rate = %v, want 1", w.Name, deref(w.SuccessRate))
			}
			if w.P50Ms == nil || w.P99Ms == nil || *w.P99Ms < *w.P50Ms {
				t.Errorf("workload %s latency p50=%v p99=%v", w.Name, deref(w.P50Ms), deref(w.P99Ms))
			}
		}
		for _, name := range []string{"loadgen", "web", "books-v1", "books-v2", "authors"} {
			if _, ok := byName[name]; !ok {
				t.Errorf("workload %s missing from the summary", name)
			}
		}
		for _, e := range s.Edges {
			if !e.MTLS || !strings.HasPrefix(e.PeerIdentity, spiffe) {
				t.Errorf("edge %s -> %s is not mTLS (peer %q)", e.Source, e.Destination, e.PeerIdentity)
			}
			if e.SuccessRate == nil || *e.SuccessRate != 1 {
				t.Errorf("edge %s -> %s success rate = %v, want 1", e.Source, e.Destination, deref(e.SuccessRate))
			}
		}
		for _, w := range wantEdges {
			found := false
			for _, e := range s.Edges {
				if e.Source == w.src && e.Destination == w.dst && e.PeerIdentity == w.peer && e.MTLS && e.Requests > 0 {
					found = true
				}
			}
			if !found {
				t.Errorf("no mTLS edge %s -> %s served by %s with traffic", w.src, w.dst, w.peer)
			}
		}
	})

	t.Run("books fail 30%", func(t *testing.T) {
		s := runDemo(t, bin, "--fail", "books=0.3")
		// With hundreds of requests per workload a 30 % failure share
		// lands far from both bounds.
		for _, w := range s.Workloads {
			if w.Name != "books-v1" && w.Name != "books-v2" {
				continue
			}
			if w.Requests == 0 || w.SuccessRate == nil || *w.SuccessRate >= 0.9 || *w.SuccessRate <= 0.4 {
				t.Errorf("workload %s success rate = %v over %d requests, want about 0.7", w.Name, deref(w.SuccessRate), w.Requests)
			}
		}
		found := false
		for _, e := range s.Edges {
			if !e.MTLS {
				t.Errorf("edge %s -> %s is not mTLS", e.Source, e.Destination)
			}
			if e.Source == "web" && e.Destination == "books.demo:80" {
				found = true
				if e.SuccessRate == nil || *e.SuccessRate >= 0.9 {
					t.Errorf("edge web -> books success rate = %v, want the drop", deref(e.SuccessRate))
				}
			}
		}
		if !found {
			t.Error("no edge web -> books.demo:80")
		}
	})
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}
