package diagcmd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/cli/check"
	"github.com/trellis-mesh/trellis/cli/checkcmd"
	"github.com/trellis-mesh/trellis/cli/policycmd"
)

// scrapeTimeout bounds one admin-port read.
const scrapeTimeout = 15 * time.Second

// Metrics is one process's metrics: -o text prints Raw as it came,
// json/yaml the parsed Families.
type Metrics struct {
	Namespace string   `json:"namespace,omitempty"`
	Pod       string   `json:"pod"`
	Error     string   `json:"error,omitempty"`
	Families  []Family `json:"families,omitempty"`
	Raw       []byte   `json:"-"`
}

// Family is one metric family; Samples are flattened as the text format
// writes them (a histogram's _bucket, _sum, _count).
type Family struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Help    string   `json:"help,omitempty"`
	Samples []Sample `json:"samples"`
}

// Sample is one series. Value is a string, as in Prometheus's HTTP API,
// because NaN and ±Inf have no JSON number.
type Sample struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels,omitempty"`
	Value  string            `json:"value"`
}

// parseMetrics reads the text exposition format into families.
func parseMetrics(raw []byte) ([]Family, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	names := make([]string, 0, len(mfs))
	for n := range mfs {
		names = append(names, n)
	}
	slices.Sort(names)
	out := make([]Family, 0, len(names))
	for _, n := range names {
		mf := mfs[n]
		f := Family{Name: n, Type: strings.ToLower(mf.GetType().String()), Help: mf.GetHelp()}
		for _, m := range mf.GetMetric() {
			f.Samples = append(f.Samples, samples(n, m)...)
		}
		out = append(out, f)
	}
	return out, nil
}

func samples(name string, m *dto.Metric) []Sample {
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	one := func(suffix string, v float64, extra ...string) Sample {
		ls := labels
		if len(extra) == 2 {
			ls = map[string]string{extra[0]: extra[1]}
			for k, v := range labels {
				ls[k] = v
			}
		}
		return Sample{Name: name + suffix, Labels: ls, Value: strconv.FormatFloat(v, 'g', -1, 64)}
	}
	switch {
	case m.GetHistogram() != nil:
		h := m.GetHistogram()
		var out []Sample
		for _, b := range h.GetBucket() {
			out = append(out, one("_bucket", float64(b.GetCumulativeCount()), "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)))
		}
		return append(out, one("_sum", h.GetSampleSum()), one("_count", float64(h.GetSampleCount())))
	case m.GetSummary() != nil:
		s := m.GetSummary()
		var out []Sample
		for _, q := range s.GetQuantile() {
			out = append(out, one("", q.GetValue(), "quantile", strconv.FormatFloat(q.GetQuantile(), 'g', -1, 64)))
		}
		return append(out, one("_sum", s.GetSampleSum()), one("_count", float64(s.GetSampleCount())))
	case m.GetCounter() != nil:
		return []Sample{one("", m.GetCounter().GetValue())}
	case m.GetGauge() != nil:
		return []Sample{one("", m.GetGauge().GetValue())}
	}
	return []Sample{one("", m.GetUntyped().GetValue())}
}

// fill parses raw into m (or records why it could not be read).
func (m *Metrics) fill(raw []byte, err error) {
	if err == nil {
		m.Raw = raw
		m.Families, err = parseMetrics(raw)
	}
	if err != nil {
		m.Error = err.Error()
	}
}

func writeMetrics(w io.Writer, ms []Metrics, header bool) error {
	for _, m := range ms {
		if header {
			fmt.Fprintf(w, "# ---- %s\n", strings.TrimPrefix(m.Namespace+"/"+m.Pod, "/"))
		}
		if m.Error != "" {
			fmt.Fprintf(w, "# unreadable: %s\n", m.Error)
			continue
		}
		if _, err := w.Write(m.Raw); err != nil {
			return err
		}
	}
	return nil
}

func newProxyMetrics(build checkcmd.EnvFunc) *cobra.Command {
	var (
		c      common
		config string
	)
	cmd := &cobra.Command{
		Use:   "proxy-metrics POD",
		Short: "Print a proxy's metrics (its admin port's /metrics)",
		Long: `Read the /metrics of a pod's Trellis proxy through the API server's pod
proxy (GET /api/v1/namespaces/NS/pods/POD:4191/proxy/metrics; RBAC: get
pods/proxy in NS), as trellis check and trellis edges do. -o text prints the
Prometheus text format as the proxy wrote it; -o json and yaml parse it
(values are strings: NaN and Inf have no JSON number). docs/metrics.md says
what each metric means.

With --config (the store file of "trellis demo") POD is a local workload and
its proxy's admin address comes from the file.`,
		Example: `  # A pod of the demo application on a cluster
  trellis diagnostics proxy-metrics web-5d9c7b-x2x9q -n trellis-demo

  # Only the request counters
  trellis diagnostics proxy-metrics web-5d9c7b-x2x9q -n trellis-demo | grep '^trellis_requests_total'

  # The local demo's web proxy, as JSON
  trellis diagnostics proxy-metrics web -n demo --config /tmp/trellis-demo/mesh.yaml -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var src policycmd.Source = policycmd.LocalSource{Path: config}
			if config == "" {
				env, err := c.env(build)
				if err != nil {
					return err
				}
				src = policycmd.KubeSource{Env: env}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), scrapeTimeout)
			defer cancel()
			m := Metrics{Namespace: c.namespace, Pod: args[0]}
			raw, err := src.Scrape(ctx, policycmd.Pod{Name: args[0], Namespace: c.namespace})
			if err != nil {
				return fmt.Errorf("proxy of %s/%s: %w", c.namespace, args[0], err)
			}
			if m.fill(raw, nil); m.Error != "" {
				return fmt.Errorf("proxy of %s/%s: %s", c.namespace, args[0], m.Error)
			}
			return c.out.Print(cmd.OutOrStdout(), m, func(w io.Writer) error { return writeMetrics(w, []Metrics{m}, false) })
		},
	}
	c.flags(cmd, true)
	cmd.Flags().StringVar(&config, "config", "", "local mode: the store file (as trellis demo writes it) instead of a cluster")
	return cmd
}

func newControllerMetrics(build checkcmd.EnvFunc) *cobra.Command {
	var (
		c     common
		admin string
	)
	cmd := &cobra.Command{
		Use:   "controller-metrics",
		Short: "Print every controller replica's metrics",
		Long: `Read the /metrics of every running replica of the trellis-controller
Deployment through the API server's pod proxy (port 9996; RBAC: get
pods/proxy in trellis-system). Replicas should agree on what they serve;
their counters are their own. A replica that cannot be read is reported and
the others still printed; the command fails only when none could be read.

With --controller-admin it reads the local controller (trellis demo, trellis
run) instead.`,
		Example: `  # Every replica, one after the other
  trellis diagnostics controller-metrics

  # Open Destination streams per replica
  trellis diagnostics controller-metrics -o json | jq '.[] | {pod, streams: (.families[] | select(.name=="trellis_controller_destination_streams") | .samples[0].value)}'

  # The local controller
  trellis diagnostics controller-metrics --controller-admin 127.0.0.1:9996`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reps, err := controllerGet(cmd.Context(), &c, build, admin, "metrics")
			if err != nil {
				return err
			}
			ms := make([]Metrics, len(reps))
			for i, r := range reps {
				ms[i] = Metrics{Namespace: r.Namespace, Pod: r.Pod}
				ms[i].fill(r.Raw, r.Err)
			}
			return c.out.Print(cmd.OutOrStdout(), ms, func(w io.Writer) error { return writeMetrics(w, ms, true) })
		},
	}
	c.flags(cmd, false)
	c.controllerFlags(cmd, &admin)
	return cmd
}

// replica is one controller replica's answer to a GET.
type replica struct {
	Namespace, Pod string
	Raw            []byte
	Err            error
}

// controllerGet GETs path from every controller replica's admin port (or
// the local controller's, Pod then being its address). It fails when no
// replica answered.
func controllerGet(ctx context.Context, c *common, build checkcmd.EnvFunc, admin, path string) ([]replica, error) {
	if admin != "" {
		if c.kubeconfig != "" || c.context != "" {
			return nil, errLocalAndCluster
		}
		sctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
		defer cancel()
		raw, err := policycmd.HTTPGet(sctx, nil, "http://"+admin+"/"+path)
		if err != nil {
			return nil, fmt.Errorf("local controller: %w", err)
		}
		return []replica{{Pod: admin, Raw: raw}}, nil
	}
	env, err := c.env(build)
	if err != nil {
		return nil, err
	}
	pods, err := check.ControllerPods(ctx, env)
	if err != nil {
		return nil, err
	}
	var out []replica
	var errs []string
	for _, p := range pods {
		sctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
		raw, err := env.Scrape(sctx, p.Namespace, p.Name, check.ControllerAdminPort, path)
		cancel()
		if err != nil {
			errs = append(errs, p.Name+": "+err.Error())
		}
		out = append(out, replica{Namespace: p.Namespace, Pod: p.Name, Raw: raw, Err: err})
	}
	if len(errs) == len(pods) {
		return nil, fmt.Errorf("no controller replica could be read: %s", strings.Join(errs, "; "))
	}
	return out, nil
}
