package grafana_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/controller/admin"
	ctrlmetrics "github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/status"
	proxymetrics "github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/viz/grafana"
)

// registered returns the metric names the real proxy and controller
// registries describe (vectors without series included), and, for the
// few registered by unexported constructors (the proxy's certifier and
// discovery), the names the metric tables of docs/metrics.md and
// docs/controller.md document.
func registered(t *testing.T) map[string]string {
	t.Helper()
	names := map[string]string{}
	describe := func(src string, c prometheus.Collector) {
		ch := make(chan *prometheus.Desc)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			if m := fqName.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = src
			}
		}
	}
	preg := prometheus.NewRegistry()
	if _, err := proxymetrics.New(preg); err != nil {
		t.Fatal(err)
	}
	if _, err := proxymetrics.NewAuthz(preg); err != nil {
		t.Fatal(err)
	}
	if _, err := proxymetrics.NewRoutes(preg); err != nil {
		t.Fatal(err)
	}
	if _, err := proxymetrics.NewControlPlane(preg, "destination"); err != nil {
		t.Fatal(err)
	}
	describe("proxy registry", preg)
	cm := ctrlmetrics.New()
	if _, err := status.NewMetrics(cm.Registry); err != nil {
		t.Fatal(err)
	}
	if err := admin.New(cm.Registry).ServeDestination(cm.Registry, nil); err != nil {
		t.Fatal(err)
	}
	describe("controller registry", cm.Registry)
	for _, doc := range []string{"../../docs/metrics.md", "../../docs/controller.md"} {
		for _, n := range documented(t, doc) {
			if _, ok := names[n]; !ok {
				names[n] = doc
			}
		}
	}
	return names
}

var (
	fqName    = regexp.MustCompile(`fqName: "([a-zA-Z_:][a-zA-Z0-9_:]*)"`)
	tableName = regexp.MustCompile("^\\| `([a-z_]+)` \\|")
	metricRef = regexp.MustCompile(`\b((?:trellis|go|process)_[a-z0-9_]+)\b`)
	varRef    = regexp.MustCompile(`\$(\{?)([a-zA-Z_]+)`)
)

// documented returns the first-column metric names of a doc's tables.
func documented(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := tableName.FindStringSubmatch(sc.Text()); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// TestDashboards validates every committed dashboard against Grafana's
// JSON model as Trellis uses it, read generically (not through the
// generator's types).
func TestDashboards(t *testing.T) {
	files := grafana.Files()
	if len(files) != 4 {
		t.Fatalf("%d dashboards, want 4 (mesh, workload, route, control plane)", len(files))
	}
	known := registered(t)
	uids := map[string]bool{}
	for name, raw := range files {
		t.Run(name, func(t *testing.T) {
			var d map[string]any
			if err := json.Unmarshal(raw, &d); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
			uid, _ := d["uid"].(string)
			if uid == "" || uids[uid] || name != uid+".json" {
				t.Errorf("uid %q: empty, repeated or not the file name", uid)
			}
			uids[uid] = true
			if v, _ := d["schemaVersion"].(float64); int(v) != grafana.SchemaVersion {
				t.Errorf("schemaVersion %v, want %d", d["schemaVersion"], grafana.SchemaVersion)
			}
			vars := checkTemplating(t, d)
			checkPanels(t, d, vars, known)
		})
	}
}

// checkTemplating: a datasource variable of Prometheus, and the names of
// every variable.
func checkTemplating(t *testing.T, d map[string]any) map[string]bool {
	vars := map[string]bool{"__rate_interval": true, "__interval": true, "__range": true}
	list, _ := path(d, "templating", "list").([]any)
	hasDS := false
	for _, v := range list {
		v := v.(map[string]any)
		vars[v["name"].(string)] = true
		if v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource" {
			hasDS = true
		}
		if v["type"] == "query" && path(v, "datasource", "uid") != grafana.DatasourceVar {
			t.Errorf("variable %v: datasource %v, want %s", v["name"], v["datasource"], grafana.DatasourceVar)
		}
	}
	if !hasDS {
		t.Error("no templated Prometheus datasource variable")
	}
	return vars
}

// checkPanels: unique ids, the grid's 24 columns without overlap, the
// templated datasource on every panel and target, defined variables, and
// metric names the proxy or controller really export.
func checkPanels(t *testing.T, d map[string]any, vars map[string]bool, known map[string]string) {
	panels, _ := d["panels"].([]any)
	if len(panels) == 0 {
		t.Fatal("no panels")
	}
	ids := map[float64]bool{}
	cells := map[[2]int]float64{}
	for _, p := range panels {
		p := p.(map[string]any)
		id, _ := p["id"].(float64)
		title := fmt.Sprint(p["title"])
		if id <= 0 || ids[id] {
			t.Errorf("panel %q: id %v not positive or repeated", title, p["id"])
		}
		ids[id] = true
		if path(p, "datasource", "uid") != grafana.DatasourceVar {
			t.Errorf("panel %q: datasource %v, want %s", title, p["datasource"], grafana.DatasourceVar)
		}
		checkGrid(t, p, id, cells)
		targets, _ := p["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %q: no targets", title)
		}
		for _, tg := range targets {
			tg := tg.(map[string]any)
			if path(tg, "datasource", "uid") != grafana.DatasourceVar {
				t.Errorf("panel %q target %v: datasource not templated", title, tg["refId"])
			}
			checkExpr(t, title, fmt.Sprint(tg["expr"]), vars, known)
		}
	}
}

func checkGrid(t *testing.T, p map[string]any, id float64, cells map[[2]int]float64) {
	g, _ := p["gridPos"].(map[string]any)
	x, y, w, h := int(g["x"].(float64)), int(g["y"].(float64)), int(g["w"].(float64)), int(g["h"].(float64))
	if w <= 0 || h <= 0 || x < 0 || x+w > 24 {
		t.Errorf("panel %v: gridPos %v outside the 24 columns", id, g)
	}
	for i := x; i < x+w; i++ {
		for j := y; j < y+h; j++ {
			if other, ok := cells[[2]int{i, j}]; ok {
				t.Errorf("panel %v overlaps panel %v at %d,%d", id, other, i, j)
				return
			}
			cells[[2]int{i, j}] = id
		}
	}
}

func checkExpr(t *testing.T, title, expr string, vars map[string]bool, known map[string]string) {
	if strings.TrimSpace(expr) == "" {
		t.Errorf("panel %q: empty expression", title)
	}
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		if !vars[m[2]] {
			t.Errorf("panel %q: variable $%s is not defined", title, m[2])
		}
	}
	for _, m := range metricRef.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if _, ok := known[name]; ok {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if _, ok := known[base]; !ok {
			t.Errorf("panel %q: metric %s is neither registered by the proxy or controller nor documented", title, name)
		}
	}
}

func path(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// TestRegisteredNamesAreReal guards the check above: the registries are
// read (a name only the proxy registers, one only the controller does).
func TestRegisteredNamesAreReal(t *testing.T) {
	known := registered(t)
	for name, src := range map[string]string{
		"trellis_response_latency_seconds":        "proxy registry",
		"trellis_inbound_authz_deny_total":        "proxy registry",
		"trellis_controller_destination_streams":  "controller registry",
		"trellis_controller_debug_requests_total": "controller registry",
		"go_goroutines":                           "controller registry",
	} {
		if known[name] != src {
			t.Errorf("%s: from %q, want %q", name, known[name], src)
		}
	}
	if _, ok := known["trellis_not_a_metric"]; ok {
		t.Error("an unknown name is known")
	}
}
