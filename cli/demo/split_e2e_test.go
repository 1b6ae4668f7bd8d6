package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/cli/policycmd"
)

// TestDemoSplitLive: real processes. `trellis demo --split
// books=v1:90,v2:10` runs; the requests the two books versions' proxies
// receive split 90/10; the route's weights are edited in the running
// demo's store file to 0/100 and, within seconds, books-v1 receives
// nothing more while every edge keeps 100 % success.
func TestDemoSplitLive(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end demo in -short mode")
	}
	bin := buildBinaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "demo", "--split", "books=v1:90,v2:10",
		"--rps", "100", "--duration", "45s", "-o", "json", "--interval", "5s")
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir(), "PATH=/usr/bin:/bin")
	env := cmd.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	storeC := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`HTTPRoute demo/books-split in (\S+mesh\.yaml)`)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				storeC <- m[1]
			}
		}
	}()
	var store string
	select {
	case store = <-storeC:
	case <-time.After(90 * time.Second):
		t.Fatalf("the demo did not announce its split in 90s")
	}
	admin := booksAdmins(t, store)
	time.Sleep(5 * time.Second) // the load is running

	before := inboundRequests(t, admin)
	time.Sleep(10 * time.Second)
	after := inboundRequests(t, admin)
	v1, v2 := after["books-v1"]-before["books-v1"], after["books-v2"]-before["books-v2"]
	share := v1 / (v1 + v2) * 100
	t.Logf("90/10: books-v1 received %.0f, books-v2 %.0f requests in 10 s (v1 %.1f %%)", v1, v2, share)
	if v1+v2 < 500 || math.Abs(share-90) > 4 { // ~1,000 requests: 4 % is over 4 standard deviations
		t.Errorf("v1 got %.1f %% of %.0f requests, want 90 %% ± 4", share, v1+v2)
	}
	splitRouteRows(ctx, t, filepath.Join(bin, "trellis"), env)

	editWeights(t, store, map[string]string{"90": "0", "10": "100"})
	edited := time.Now()
	var took time.Duration
	prev := inboundRequests(t, admin)["books-v1"]
	for took == 0 {
		time.Sleep(500 * time.Millisecond)
		cur := inboundRequests(t, admin)["books-v1"]
		if cur == prev {
			took = time.Since(edited)
			break
		}
		prev = cur
		if time.Since(edited) > 20*time.Second {
			t.Fatal("books-v1 still received requests 20 s after its weight became 0")
		}
	}
	t.Logf("books-v1 received nothing more %s after the edit (polled every 500 ms)", took.Round(10*time.Millisecond))
	quiet := inboundRequests(t, admin)
	time.Sleep(5 * time.Second)
	end := inboundRequests(t, admin)
	if d := end["books-v1"] - quiet["books-v1"]; d != 0 {
		t.Errorf("books-v1 received %.0f requests at weight 0", d)
	}
	if end["books-v2"]-quiet["books-v2"] < 200 {
		t.Errorf("books-v2 received %.0f requests in 5 s at weight 100, want about 500", end["books-v2"]-quiet["books-v2"])
	}

	if err := cmd.Wait(); err != nil {
		t.Fatalf("trellis demo: %v\n%s", err, stderr.String())
	}
	pw.Close()
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("stdout: %v\n%s", err, stdout.String())
	}
	for _, e := range s.Edges {
		if e.SuccessRate == nil || *e.SuccessRate != 1 || e.Requests == 0 {
			t.Errorf("edge %s -> %s: success %v over %d requests, want 100 %%", e.Source, e.Destination, e.SuccessRate, e.Requests)
		}
	}
}

// splitRouteRows: local `trellis routes` shows web's outbound route rows
// of the split, one per backend, from web's proxy's route metrics.
func splitRouteRows(ctx context.Context, t *testing.T, trellis string, env []string) {
	t.Helper()
	// A one-shot command has no history: its window is the two scrapes
	// it makes, about 2 s apart (some 200 requests at 100 rps).
	cmd := exec.CommandContext(ctx, trellis, "routes", "workload/web", "--local", "--to", "svc/books", "-o", "json")
	cmd.Env = env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("trellis routes: %v", err)
	}
	var doc struct {
		Routes []struct {
			Direction, Route, Rule, Backend string
			Requests                        float64
		} `json:"routes"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("trellis routes: %v\n%s", err, out)
	}
	got := map[string]float64{}
	for _, r := range doc.Routes {
		if r.Direction == "outbound" && r.Route == "demo/books-split" {
			got[strings.SplitN(r.Backend, ".", 2)[0]] += r.Requests
		}
	}
	v1, v2 := got["books-v1"], got["books-v2"]
	t.Logf("trellis routes --local: demo/books-split sent %.0f requests to books-v1, %.0f to books-v2 in its window", v1, v2)
	if v1+v2 < 50 || v1 <= v2 || v2 == 0 {
		t.Errorf("route rows %s: want demo/books-split rows for both backends, books-v1 the larger", out)
	}
}

// booksAdmins maps books-v1 and books-v2 to their proxies' admin addresses.
func booksAdmins(t *testing.T, store string) map[string]string {
	t.Helper()
	f, err := policycmd.ReadStore(store)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, w := range f.Workloads {
		if w.Name == "books-v1" || w.Name == "books-v2" {
			out[w.Name] = w.AdminAddr
		}
	}
	if len(out) != 2 {
		t.Fatalf("workloads of the store: %+v, want books-v1 and books-v2", f.Workloads)
	}
	return out
}

var inboundRequestsLine = regexp.MustCompile(`^trellis_requests_total\{[^}]*direction="inbound"[^}]*\} (\S+)$`)

// inboundRequests sums each workload's inbound trellis_requests_total.
func inboundRequests(t *testing.T, admin map[string]string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for name, addr := range admin {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatalf("%s metrics: %v", name, err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := inboundRequestsLine.FindStringSubmatch(sc.Text()); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				out[name] += v
			}
		}
		resp.Body.Close()
	}
	return out
}

// editWeights rewrites the store's `weight: N` lines by the map, failing
// unless each was found once.
func editWeights(t *testing.T, store string, weights map[string]string) {
	t.Helper()
	b, err := os.ReadFile(store)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for from, to := range weights {
		re := regexp.MustCompile(`(?m)^(\s*weight: )` + from + `$`)
		if n := len(re.FindAllStringIndex(s, -1)); n != 1 {
			t.Fatalf("store %s: %d lines `weight: %s`, want 1:\n%s", store, n, from, s)
		}
		s = re.ReplaceAllString(s, "${1}"+to)
	}
	if !strings.Contains(s, "books-split") {
		t.Fatalf("store %s has no route books-split", store)
	}
	// Replaced in one rename, as an editor saves: the controller never
	// reads half a file.
	tmp := store + ".new"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, store); err != nil {
		t.Fatal(err)
	}
}
