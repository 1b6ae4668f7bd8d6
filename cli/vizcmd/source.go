// Package vizcmd is `trellis stat`, `trellis routes`, `trellis viz
// install|uninstall`, and the one way every view (and the dashboard) finds
// its model.Source: --prometheus-url, else local mode (--local, --config,
// or a running `trellis demo` when no cluster is configured), else the
// viz Prometheus of the cluster through a port-forward.
package vizcmd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/cli/kubeconfig"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/internal/privfile"
	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
	"github.com/trellis-mesh/trellis/viz/scrape"
	"sigs.k8s.io/yaml"
)

// SourceFlags choose where the figures come from.
type SourceFlags struct {
	Kubeconfig, Context string
	PrometheusURL       string
	// Local forces local mode; Config is a local store file (default: the
	// newest running `trellis demo`'s).
	Local  bool
	Config string
}

// Register adds the flags (--kubeconfig, --context, --prometheus-url,
// --local, --config).
func (f *SourceFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to the kubeconfig (default $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context to use (default the current context)")
	fs.StringVar(&f.PrometheusURL, "prometheus-url", "", "query this Prometheus (scraping with the relabelling of docs/observability.md) instead of the cluster's trellis-viz one")
	fs.BoolVar(&f.Local, "local", false, "local mode: scrape the proxies of a running trellis demo (or of --config) directly")
	fs.StringVar(&f.Config, "config", "", "local mode: the local store file whose workloads' adminAddr to scrape (implies --local)")
}

// Opened is a Source and what it is, for messages.
type Opened struct {
	model.Source
	// Mode is "prometheus" or "local"; Where the URL or store file.
	Mode, Where string
	// Kube is the cluster's client when the Source is the cluster's.
	Kube  kubernetes.Interface
	close func()
}

// Close releases the port-forward, if any.
func (o *Opened) Close() {
	if o.close != nil {
		o.close()
	}
}

// Open returns the Source the flags select.
func (f *SourceFlags) Open(ctx context.Context) (*Opened, error) {
	if f.PrometheusURL != "" {
		c, err := prom.NewClient(f.PrometheusURL, nil)
		if err != nil {
			return nil, err
		}
		return &Opened{Source: &prom.Source{C: c}, Mode: "prometheus", Where: c.URL()}, nil
	}
	if f.Local || f.Config != "" {
		return openLocal(f.Config)
	}
	cfg, err := kubeconfig.Load(f.Kubeconfig, f.Context)
	if err != nil {
		// No cluster configured: a running demo is what the user means.
		if o, lerr := openLocal(""); lerr == nil {
			return o, nil
		}
		return nil, fmt.Errorf("%w (or, for local mode, start `trellis demo` and use --local)", err)
	}
	return openCluster(ctx, cfg)
}

func openCluster(ctx context.Context, cfg *rest.Config) (*Opened, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	url, stop, err := ForwardPrometheus(ctx, cfg, cs)
	if err != nil {
		return nil, err
	}
	c, err := prom.NewClient(url, nil)
	if err != nil {
		stop()
		return nil, err
	}
	src := &prom.Source{C: c, Pods: PodCounter(cs)}
	return &Opened{Source: src, Mode: "prometheus", Where: "port-forward to " + url, Kube: cs, close: stop}, nil
}

// openLocal scrapes the workloads of a store file (the running demo's
// when file is "").
func openLocal(file string) (*Opened, error) {
	var (
		b   []byte
		err error
	)
	if file == "" {
		file, b, err = runningDemo()
	} else {
		b, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("local store: %w", err)
	}
	var f meshconfig.File
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("local store %s: %w", file, err)
	}
	targets := scrape.Targets(f)
	if len(targets) == 0 {
		return nil, fmt.Errorf("local store %s: no workload has an adminAddr to scrape", file)
	}
	return &Opened{Source: &scrape.Source{Targets: targets}, Mode: "local", Where: file}, nil
}

// demoStore is the name of the store file in a demo's work directory.
const demoStore = "mesh.yaml"

// RunningDemo is the store file of the newest `trellis demo` of this
// machine whose proxies answer (the demo writes it as mesh.yaml in its
// work directory, trellis-demo-* under the temporary directory).
func RunningDemo() (string, error) {
	file, _, err := runningDemo()
	return file, err
}

// runningDemo is RunningDemo and the store it read. Only the user's own
// private work directories count (privfile): a store another local user
// planted there would show their figures as the demo's.
func runningDemo() (string, []byte, error) {
	files, _ := filepath.Glob(filepath.Join(os.TempDir(), "trellis-demo-*", demoStore))
	type cand struct {
		path string
		mod  time.Time
	}
	var cands []cand
	for _, f := range files {
		if st, err := os.Lstat(f); err == nil {
			cands = append(cands, cand{f, st.ModTime()})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].mod.After(cands[j].mod) })
	var refused []error
	for _, c := range cands {
		b, err := readDemoStore(filepath.Dir(c.path))
		if err != nil {
			refused = append(refused, err)
			continue
		}
		if answers(b) {
			return c.path, b, nil
		}
	}
	err := errors.New("no running `trellis demo` found (start one, or give --config FILE)")
	if len(refused) > 0 {
		err = fmt.Errorf("%w; refused: %w", err, errors.Join(refused...))
	}
	return "", nil, err
}

// readDemoStore reads dir's store when dir and the store are the user's
// own and private (0700 and 0600, as the demo makes them).
func readDemoStore(dir string) ([]byte, error) {
	root, err := privfile.OpenDir(dir, privfile.Private)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return privfile.Read(root, demoStore)
}

// answers is true when the store's first proxy serves /ready.
func answers(store []byte) bool {
	var f meshconfig.File
	if yaml.Unmarshal(store, &f) != nil {
		return false
	}
	hc := &http.Client{Timeout: time.Second}
	for _, w := range f.Workloads {
		if w.AdminAddr == "" {
			continue
		}
		resp, err := hc.Get("http://" + w.AdminAddr + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	return false
}
