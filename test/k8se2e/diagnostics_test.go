package k8se2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDiagnostics: `trellis diagnostics` on the real cluster, through the
// API server's pod proxy with the admin kubeconfig: every controller
// replica's Destination answer for books (both pods, their identity), a
// proxy's and the controller's metrics, and a port's policy.
func TestDiagnostics(t *testing.T) {
	c := newCluster(t)
	const ns = "e2e-diagnostics"
	c.sharedInstall(t)
	c.deployDemo(t, ns, 2)
	var want []string
	for _, p := range c.pods(t, ns, "app=books") {
		if p.DeletionTimestamp == nil {
			want = append(want, p.Status.PodIP)
		}
	}
	slices.Sort(want)
	start := time.Now()
	eventually(t, time.Minute, "every replica answers both books pods", func() error {
		return endpointsAnswer(c, t, ns, want)
	})
	t.Logf("diagnostics endpoints agreed with the pods %s after the rollout", time.Since(start).Round(time.Second))

	web := c.pods(t, ns, "app=web")[0].Name
	var pm struct {
		Families []struct {
			Name    string
			Samples []struct{ Value string }
		}
	}
	if err := json.Unmarshal([]byte(c.mustTrellis(t, nil, "diagnostics", "proxy-metrics", web, "-n", ns, "-o", "json")), &pm); err != nil {
		t.Fatal(err)
	}
	valid := ""
	for _, f := range pm.Families {
		if f.Name == "trellis_identity_cert_valid" && len(f.Samples) == 1 {
			valid = f.Samples[0].Value
		}
	}
	if valid != "1" {
		t.Errorf("web's proxy trellis_identity_cert_valid = %q, want 1", valid)
	}

	var cm []struct {
		Pod      string
		Error    string
		Families []struct{ Name string }
	}
	if err := json.Unmarshal([]byte(c.mustTrellis(t, nil, "diagnostics", "controller-metrics", "-o", "json")), &cm); err != nil {
		t.Fatal(err)
	}
	for _, r := range cm {
		if r.Error != "" || len(r.Families) == 0 {
			t.Errorf("controller replica %s: %q, %d families", r.Pod, r.Error, len(r.Families))
		}
	}

	books := c.pods(t, ns, "app=books")[0].Name
	var pol struct {
		Policy  struct{ Name, Source string }
		Default string `json:"defaultInboundPolicy"`
	}
	if err := json.Unmarshal([]byte(c.mustTrellis(t, nil, "diagnostics", "policy", books, "8080", "-n", ns, "-o", "json")), &pol); err != nil {
		t.Fatal(err)
	}
	if pol.Policy.Name != "default" || pol.Default == "" {
		t.Errorf("books:8080 without a Server: policy %+v, want the default answer", pol)
	}
	topWeb(t, c, ns)
}

// topWeb: `trellis top deploy/web -o json --limit` under load ends by
// itself, its last snapshot holding web's inbound requests from the load
// generator's identity and its outbound ones to books.
func topWeb(t *testing.T, c *cluster, ns string) {
	c.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "web." + ns + ".svc.cluster.local:80", RPS: 20})
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := c.trellis(ctx, nil, "top", "deploy/web", "-n", ns, "-o", "json", "--limit", "60", "--refresh", "1s")
	if err != nil {
		t.Fatalf("trellis top: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	var last struct {
		Ended string
		Rows  []struct {
			Direction, Source, Destination, Path string
			Count                                int
			SuccessRate                          float64
		}
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		t.Fatalf("last snapshot: %v\n%s", err, out)
	}
	t.Logf("trellis top --limit 60 ended after %s, %d snapshots", time.Since(start).Round(100*time.Millisecond), len(lines))
	seen := map[string]bool{}
	for _, r := range last.Rows {
		switch {
		case r.Direction == "inbound" && r.Source == "loadgen."+ns && strings.HasPrefix(r.Destination, ns+"/web-") && r.Count > 0 && r.SuccessRate > 0:
			seen["inbound"] = true
		case r.Direction == "outbound" && strings.HasPrefix(r.Source, ns+"/web-") && strings.HasPrefix(r.Destination, "books.") && r.Count > 0:
			seen["outbound"] = true
		}
	}
	if last.Ended != "ok" || !seen["inbound"] || !seen["outbound"] {
		t.Errorf("want the tap ended ok with web's inbound rows from loadgen and outbound rows to books, got:\n%s", lines[len(lines)-1])
	}
}

func endpointsAnswer(c *cluster, t *testing.T, ns string, want []string) error {
	out, err := c.trellis(t.Context(), nil, "diagnostics", "endpoints", "books:80", "-n", ns, "-o", "json")
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	var reps []struct {
		Pod, Error string
		Answer     *struct {
			Exists    bool
			Endpoints []struct{ Address, Identity string }
		}
	}
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	if len(reps) == 0 {
		return fmt.Errorf("no replica: %s", out)
	}
	for _, r := range reps {
		if r.Answer == nil || !r.Answer.Exists {
			return fmt.Errorf("replica %s: %s %+v", r.Pod, r.Error, r.Answer)
		}
		var got []string
		for _, e := range r.Answer.Endpoints {
			if e.Identity != "spiffe://cluster.local/ns/"+ns+"/sa/books" {
				return fmt.Errorf("replica %s: endpoint %s proves %q", r.Pod, e.Address, e.Identity)
			}
			host, _, _ := net.SplitHostPort(e.Address)
			got = append(got, host)
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("replica %s: endpoints %v, want the books pods %v", r.Pod, got, want)
		}
	}
	return nil
}
