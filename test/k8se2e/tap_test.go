package k8se2e

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/tapexport"
)

// TestTap (suite tap, issue 14): the tap.trellis.io API on the shared
// install with the demo application. Users are ServiceAccounts tapped as
// with kubectl's --as: one without any tap right, one with trellis-tap
// (watch), one with trellis-tap-capture (watch, capture).
func TestTap(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-tap"
	c.sharedInstall(t)
	c.namespace(t, ns)
	c.waitInjector(t)
	start := time.Now()
	c.mustRun(t, nil, "wait", "--for=condition=Available", "apiservice/v1alpha1.tap.trellis.io", "--timeout=2m")
	t.Logf("APIService v1alpha1.tap.trellis.io Available after %s", time.Since(start).Round(100*time.Millisecond))

	manifest := c.mustTrellis(t, nil, "demo", "--kubernetes", "-n", ns, "--image", c.image("demo-app"), "--rps", "10")
	c.mustRun(t, []byte(manifest), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web", "loadgen")
	user := func(sa string) string { return "system:serviceaccount:" + ns + ":" + sa }
	for sa, role := range map[string]string{"tap-nobody": "", "tap-watcher": "trellis-tap", "tap-capturer": "trellis-tap-capture"} {
		c.mustRun(t, nil, "-n", ns, "create", "serviceaccount", sa)
		if role != "" {
			c.mustRun(t, nil, "-n", ns, "create", "rolebinding", sa, "--clusterrole="+role, "--serviceaccount="+ns+":"+sa)
		}
	}

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, sa string
			args     []string
			want     []string
		}{
			{"no RBAC verb", "tap-nobody", nil, []string{`cannot watch resource "deployments/tap"`, "trellis-tap"}},
			{"bodies without capture", "tap-watcher", []string{"--capture-bodies", "64"}, []string{"cannot capture", "trellis-tap-capture"}},
		} {
			args := append([]string{"tap", "deploy/web", "-n", ns, "--limit", "1", "--as", user(tc.sa)}, tc.args...)
			out, err := c.trellis(t.Context(), nil, args...)
			if err == nil {
				t.Errorf("%s: trellis %s succeeded:\n%s", tc.name, strings.Join(args, " "), out)
				continue
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s: the refusal does not say %q: %v", tc.name, w, err)
				}
			}
			t.Logf("%s: %v", tc.name, err)
		}
	})

	t.Run("live events of every demo edge", func(t *testing.T) {
		// deploy/web sees two edges (loadgen -> web in, web -> books out);
		// the namespace all three.
		id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
		edges := map[string]bool{id("loadgen") + " -> " + id("web"): false, id("web") + " -> " + id("books"): false}
		c.tapUntil(t, []string{"deploy/web", "-n", ns, "-o", "json", "--as", user("tap-watcher")}, edges)
		edges[id("books")+" -> "+id("authors")] = false
		c.tapUntil(t, []string{"ns/" + ns, "-o", "json", "--as", user("tap-watcher")}, edges)
	})

	t.Run("HAR export", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "web.har")
		out, err := c.trellis(t.Context(), nil, "tap", "deploy/web", "-n", ns, "--limit", "10", "--as", user("tap-capturer"),
			"--capture-bodies", "256", "--export", "har", "--file", file)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var har tapexport.HAR
		if err := json.Unmarshal(data, &har); err != nil {
			t.Fatalf("the HAR file does not parse: %v", err)
		}
		if har.Log.Version != "1.2" || len(har.Log.Entries) < 10 {
			t.Fatalf("HAR version %q with %d entries; want 1.2 and the 10 requests", har.Log.Version, len(har.Log.Entries))
		}
		bodies := 0
		for _, e := range har.Log.Entries {
			if _, err := time.Parse(time.RFC3339Nano, e.StartedDateTime); err != nil || e.Request.Method == "" || !strings.HasPrefix(e.Request.URL, "http") {
				t.Errorf("entry %+v", e.Request)
			}
			if e.Response.Content.Text != "" {
				bodies++
			}
		}
		t.Logf("HAR: %d entries, %d with a captured response body", len(har.Log.Entries), bodies)
		if bodies == 0 {
			t.Error("--capture-bodies captured no response body")
		}
	})
	c.deleteNamespace(t, ns)
}

// tapUntil runs trellis tap until an event of every edge ("src -> dst"
// identities) was seen, logging the time to the first event and to all.
func (c *cluster) tapUntil(t *testing.T, args []string, edges map[string]bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin, "trellis"), append([]string{"tap"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(nil, 1<<20)
	n, missing := 0, len(edges)
	for missing > 0 && sc.Scan() {
		ev := &apiv1.TapEvent{}
		if err := protojson.Unmarshal(sc.Bytes(), ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if n++; n == 1 {
			t.Logf("trellis tap %s: first event after %s", args[0], time.Since(start).Round(time.Millisecond))
		}
		if ev.GetPod() == "" || ev.GetNamespace() == "" {
			t.Errorf("event without pod or namespace: %s", sc.Text())
		}
		k := ev.GetSourceIdentity() + " -> " + ev.GetDestinationIdentity()
		if seen, ok := edges[k]; ok && !seen && ev.GetResponseEnd() != nil {
			edges[k] = true
			missing--
			t.Logf("edge %s: first finished request after %s", k, time.Since(start).Round(time.Millisecond))
		}
	}
	if missing > 0 {
		t.Fatalf("trellis tap %s: after %d events in %s, edges not seen: %v\nstderr: %s", strings.Join(args, " "), n,
			time.Since(start).Round(time.Second), edges, stderr.String())
	}
	for k := range edges {
		edges[k] = false
	}
}
