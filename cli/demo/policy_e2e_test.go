package demo_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/cli/policycmd"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// TestDemoPolicySuggest: real processes. The demo runs with --policy deny
// (the intruder refused); `trellis policy suggest --apply` writes the
// policy of what the proxies saw into the running demo's store file; the
// controller pushes it live: every edge of the demo keeps 100 % success
// and the intruder, never allowed, stays refused, now by the suggested
// Servers.
func TestDemoPolicySuggest(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the end-to-end demo in -short mode")
	}
	bin := buildBinaries(t)
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "demo", "--policy", "deny", "--duration", "40s", "-o", "json", "--interval", "5s")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "PATH=/usr/bin:/bin")
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	storeC := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`edit (\S+mesh\.yaml)`)
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
		t.Fatalf("the demo did not start its load in 90s")
	}
	time.Sleep(8 * time.Second) // traffic for the proxies to count

	sug := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "policy", "suggest", "-n", "demo", "--config", store, "--apply")
	var notes bytes.Buffer
	sug.Stderr = &notes
	out, err := sug.Output()
	t.Logf("trellis policy suggest --apply:\n%s%s", notes.String(), out)
	if err != nil {
		t.Fatalf("suggest: %v", err)
	}
	if !strings.Contains(notes.String(), "calls from "+spiffe+"intruder were denied") {
		t.Errorf("the intruder's denials are not noted")
	}
	allowed := suggestedClients(t, out)
	want := map[string]string{"web": "loadgen", "books": "web", "authors": "books"}
	if len(allowed) != 4 { // web, books (two ports: v1 and v2), authors
		t.Errorf("suggested servers %v, want 4", allowed)
	}
	for server, ids := range allowed {
		sa := server[:strings.LastIndex(server, "-")]
		if ids != spiffe+want[sa] {
			t.Errorf("server %s allows %q, want only %s", server, ids, spiffe+want[sa])
		}
	}

	// The suggested policy is in force once the books proxies deny the
	// intruder under its Servers' names (books-<port>), not the demo's.
	f, err := policycmd.ReadStore(store)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for !deniedBySuggested(t, f.Workloads) {
		if time.Since(start) > 20*time.Second {
			t.Fatal("the suggested policy did not take effect within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("suggested policy in force after %s", time.Since(start).Round(time.Millisecond))
	checkAuthzCommand(ctx, t, bin, store)

	if err := cmd.Wait(); err != nil {
		t.Fatalf("trellis demo: %v\n%s", err, stderr.String())
	}
	pw.Close()
	var s summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("stdout: %v\n%s", err, stdout.String())
	}
	for _, e := range s.Edges {
		if e.Source == "intruder" {
			continue
		}
		if e.SuccessRate == nil || *e.SuccessRate != 1 || e.Requests == 0 {
			t.Errorf("edge %s -> %s: success %v over %d requests, want 100 %%", e.Source, e.Destination, e.SuccessRate, e.Requests)
		}
	}
}

// suggestedClients maps each suggested Server to the identities its
// AuthorizationPolicy allows (comma-joined).
func suggestedClients(t *testing.T, out []byte) map[string]string {
	t.Helper()
	got := map[string]string{}
	for _, doc := range strings.Split(string(out), "\n---\n") {
		var o struct {
			Kind string
			Spec struct {
				TargetRef       struct{ Name string } `json:"targetRef"`
				Identities      []string
				Unauthenticated bool
			}
		}
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil || o.Kind != "AuthorizationPolicy" {
			continue
		}
		if o.Spec.Unauthenticated {
			t.Errorf("server %s: unauthenticated allowed, but every demo call is mesh mTLS", o.Spec.TargetRef.Name)
		}
		got[o.Spec.TargetRef.Name] = strings.Join(o.Spec.Identities, ",")
	}
	return got
}

// deniedBySuggested reports whether a books proxy counts denials of the
// intruder under a suggested Server (books-<port>).
func deniedBySuggested(t *testing.T, workloads []meshconfig.Workload) bool {
	t.Helper()
	for _, w := range workloads {
		if !strings.HasPrefix(w.Name, "books") {
			continue
		}
		resp, err := http.Get("http://" + w.AdminAddr + "/metrics")
		if err != nil {
			continue
		}
		ss, err := policycmd.ParseMetrics(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			if s.Decision == policycmd.Allow && s.ClientID == spiffe+"intruder" {
				t.Fatalf("books allowed the intruder: %+v", s)
			}
			if s.Decision == policycmd.Deny && s.ClientID == spiffe+"intruder" && regexp.MustCompile(`^server/books-\d+$`).MatchString(s.Server) {
				return true
			}
		}
	}
	return false
}

// checkAuthzCommand runs `trellis authz` on the running demo: the books
// rows count the intruder's denials, and nothing else is denied.
func checkAuthzCommand(ctx context.Context, t *testing.T, bin, store string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "trellis"), "authz", "-n", "demo", "--config", store, "--window", "3s", "-o", "json").Output()
	if err != nil {
		t.Fatalf("trellis authz: %v", err)
	}
	var rows []policycmd.Row
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("trellis authz -o json: %v\n%s", err, out)
	}
	var booksDenied, otherDenied, allowed float64
	for _, r := range rows {
		allowed += r.Allowed
		if r.Workload == "books" {
			booksDenied += r.Denied
		} else {
			otherDenied += r.Denied
		}
	}
	if booksDenied == 0 || otherDenied != 0 || allowed == 0 {
		t.Errorf("trellis authz: books denied %v, others denied %v, allowed %v; want books > 0, others 0, allowed > 0\n%s", booksDenied, otherDenied, allowed, out)
	}
}
