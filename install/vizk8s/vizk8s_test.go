package vizk8s

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestRender(t *testing.T) {
	out, err := Render(Options{TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Manifest(out)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, out)
	}
	kinds := map[string]int{}
	for _, o := range m.Objects {
		kinds[o.Kind.Kind]++
		if o.Namespace != "" && o.Namespace != Namespace {
			t.Errorf("%s outside %s", o.Ref(), Namespace)
		}
		labels, _ := o.Content["metadata"].(map[string]any)["labels"].(map[string]any)
		if labels["app.kubernetes.io/component"] != "viz" {
			t.Errorf("%s lacks the viz component label (viz uninstall would miss it)", o.Ref())
		}
		switch o.Kind.Kind {
		case "ClusterRole":
			rules := o.Content["rules"].([]any)
			if len(rules) != 1 {
				t.Fatalf("rules %v", rules)
			}
			r := rules[0].(map[string]any)
			if s := strings.Join(anyStrings(r["resources"]), ","); s != "pods" {
				t.Errorf("ClusterRole resources %s, want pods only", s)
			}
			if s := strings.Join(anyStrings(r["verbs"]), ","); s != "list,watch" {
				t.Errorf("ClusterRole verbs %s, want list,watch", s)
			}
		case "Deployment":
			spec := o.Content["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			c := spec["containers"].([]any)[0].(map[string]any)
			if c["image"] != DefaultImage {
				t.Errorf("image %v", c["image"])
			}
			res := c["resources"].(map[string]any)
			if res["limits"].(map[string]any)["memory"] != "1Gi" || res["requests"] == nil {
				t.Errorf("resources %v", res)
			}
		case "ConfigMap":
			cfg := o.Content["data"].(map[string]any)["prometheus.yml"].(string)
			var parsed map[string]any
			if err := yaml.Unmarshal([]byte(cfg), &parsed); err != nil {
				t.Fatalf("prometheus.yml: %v\n%s", err, cfg)
			}
			if !strings.Contains(cfg, "replacement: spiffe://example.org/ns/$1/sa/$2") {
				t.Errorf("trust domain not in the identity relabelling:\n%s", cfg)
			}
			if jobs := parsed["scrape_configs"].([]any); len(jobs) != 2 {
				t.Errorf("%d scrape jobs, want proxy and controller", len(jobs))
			}
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Service", "Deployment"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s, want 1", kinds[k], k)
		}
	}
}

func anyStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestRenderRefuses(t *testing.T) {
	for name, o := range map[string]Options{
		"image with a space":  {Image: "prom/prometheus:v1 --x"},
		"bad trust domain":    {TrustDomain: "Not_A_Domain"},
		"short retention":     {Retention: time.Second},
		"bad memory":          {MemoryLimit: "lots"},
		"sub-second interval": {ScrapeInterval: time.Millisecond},
	} {
		if _, err := Render(o); err == nil {
			t.Errorf("%s: rendered", name)
		}
	}
}

// The real Prometheus loads the configuration: it exits at start on a
// configuration it refuses, and answers ready once it loaded one.
func TestPrometheusLoadsConfig(t *testing.T) {
	bin := os.Getenv("TRELLIS_PROMETHEUS_BIN")
	if bin == "" {
		m, _ := filepath.Glob("/var/tmp/trellis-cluster/cache/prometheus-*/prometheus")
		if len(m) == 0 {
			t.Skip("no Prometheus: set TRELLIS_PROMETHEUS_BIN (make images builds and caches one under /var/tmp/trellis-cluster/cache)")
		}
		bin = m[len(m)-1]
	}
	cfg, err := Config(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	start := time.Now()
	for time.Since(start) < 60*time.Second {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("prometheus exited (%v):\n%s", err, log.String())
		default:
		}
		if resp, err := http.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Logf("ready after %s", time.Since(start).Round(time.Millisecond))
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not ready after 60 s:\n%s", log.String())
}
