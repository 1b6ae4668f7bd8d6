package demo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// In local mode `trellis stat`, `edges` and `routes` find the running
// `trellis demo` (its store file under TMPDIR) and read its proxies: every
// workload meshed, web serving what the load generator sends, every edge
// over mTLS with the right identity.
func TestVizLocalMode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries")
	}
	bin := buildBinaries(t)
	tmp := t.TempDir()
	env := append(os.Environ(), "TMPDIR="+tmp, "PATH=/usr/bin:/bin")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "demo", "--rps", "50", "--duration", "25s", "-o", "json")
	demo.Env = env
	var demoErr bytes.Buffer
	demo.Stdout, demo.Stderr = &bytes.Buffer{}, &demoErr
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = demo.Wait()
		assertNothingLeft(t, bin)
	}()
	trellis := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), args...)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return out, fmt.Errorf("trellis %v: %w: %s", args, err, stderr.String())
		}
		return out, nil
	}

	type golden struct {
		RPS         float64  `json:"rps"`
		SuccessRate *float64 `json:"successRate"`
	}
	var stat struct {
		Source string `json:"source"`
		Stats  []struct {
			Resource   struct{ Kind, Name string } `json:"resource"`
			MeshedPods int                         `json:"meshedPods"`
			golden
		} `json:"stats"`
	}
	start := time.Now()
	for {
		out, err := trellis("stat", "workload", "--local", "-o", "json")
		if err == nil {
			err = json.Unmarshal(out, &stat)
		}
		if err == nil && len(stat.Stats) == 5 && stat.Stats[1].RPS > 0 {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("no figures after 90 s: %v\n%s", err, demoErr.String())
		}
		time.Sleep(time.Second)
	}
	t.Logf("figures %s after the demo started", time.Since(start).Round(100*time.Millisecond))
	if stat.Source != "local" {
		t.Errorf("source %q, want local", stat.Source)
	}
	for _, r := range stat.Stats {
		if r.Resource.Kind != "workloads" || r.MeshedPods != 1 {
			t.Errorf("row %+v", r)
		}
		if r.Resource.Name == "web" && (math.Abs(r.RPS-50) > 5 || r.SuccessRate == nil || *r.SuccessRate != 1) {
			t.Errorf("web: rps %.2f success %v, the load generator sends 50/s", r.RPS, r.SuccessRate)
		}
	}

	out, err := trellis("edges", "--local", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var edges struct {
		Edges []struct {
			Pod, Destination, PeerIdentity string
			MTLS                           bool
		}
	}
	if err := json.Unmarshal(out, &edges); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range edges.Edges {
		if e.MTLS {
			seen[e.Pod+" -> "+e.Destination+" "+e.PeerIdentity] = true
		}
	}
	for _, want := range []string{
		"loadgen -> workload/web " + spiffe + "web",
		"web -> svc/books " + spiffe + "books",
	} {
		if !seen[want] {
			t.Errorf("no mTLS edge %s in %v", want, seen)
		}
	}
	if out, err := trellis("routes", "workload/web", "--local", "-o", "json"); err != nil || !bytes.Contains(out, []byte(`"route": "[default]"`)) {
		t.Errorf("routes: %v\n%s", err, out)
	}
}
