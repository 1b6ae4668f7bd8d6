// Package vizk8s renders `trellis viz install`: a pinned Prometheus in
// namespace trellis-viz that scrapes every trellis-proxy's admin port and
// the controller, relabelling namespace, pod, owning workload and identity
// onto every series (the labels viz/prom queries).
package vizk8s

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"text/template"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/install"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

//go:embed viz.yaml.tmpl
var manifest string

//go:embed prometheus.yml.tmpl
var promConfig string

var (
	funcs     = template.FuncMap{"indent": indent}
	manifestT = template.Must(template.New("viz").Funcs(funcs).Parse(manifest))
	promConfT = template.Must(template.New("prometheus.yml").Parse(promConfig))
)

// Namespace, Service and port of the installed Prometheus.
const (
	Namespace   = "trellis-viz"
	ServiceName = "prometheus"
	ServicePort = 9090
	// PodSelector selects the Prometheus pod (port-forward target).
	PodSelector = "app.kubernetes.io/name=prometheus,app.kubernetes.io/part-of=trellis"
	// Selector selects everything viz install creates.
	Selector = install.LabelPartOf + "=" + install.LabelValue + "," + install.LabelManagedBy + "=" + install.LabelValue + ",app.kubernetes.io/component=viz"
)

// PrometheusVersion is the pinned Prometheus (the cluster harness builds
// it from github.com/prometheus/prometheus v0.316.0, Prometheus 3.16.0, and
// imports it under DefaultImage).
const PrometheusVersion = "v3.16.0"

// DefaultImage is the image as a user pulls it.
const DefaultImage = "prom/prometheus:" + PrometheusVersion

// Options of Render; zero values take the defaults.
type Options struct {
	Image          string        // default DefaultImage
	TrustDomain    string        // of the mesh's identities, default cluster.local
	ScrapeInterval time.Duration // default 10s
	Retention      time.Duration // default 6h
	MemoryLimit    string        // default 1Gi
}

type data struct {
	Namespace, Image, Retention, RetentionSize, DataSize string
	CPURequest, MemoryRequest, MemoryLimit               string
	Config                                               string
}

// Render returns the multi-document YAML of the viz install.
func Render(o Options) ([]byte, error) {
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if strings.TrimSpace(o.Image) != o.Image || strings.ContainsAny(o.Image, " \n\"'") {
		return nil, fmt.Errorf("--image %q: not an image reference", o.Image)
	}
	if o.MemoryLimit == "" {
		o.MemoryLimit = "1Gi"
	}
	if _, err := resource.ParseQuantity(o.MemoryLimit); err != nil {
		return nil, fmt.Errorf("--memory-limit %q: %w", o.MemoryLimit, err)
	}
	if o.Retention == 0 {
		o.Retention = 6 * time.Hour
	}
	if o.Retention < time.Minute {
		return nil, fmt.Errorf("--retention %s: at least 1m", o.Retention)
	}
	cfg, err := Config(o)
	if err != nil {
		return nil, err
	}
	d := data{
		Namespace: Namespace, Image: o.Image,
		Retention: fmt.Sprintf("%dm", int(o.Retention/time.Minute)), RetentionSize: "512MB", DataSize: "1Gi",
		CPURequest: "100m", MemoryRequest: "256Mi", MemoryLimit: o.MemoryLimit,
		Config: cfg,
	}
	var b bytes.Buffer
	if err := manifestT.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("render viz: %w", err)
	}
	return b.Bytes(), nil
}

// Config is Prometheus's configuration file (the scrape jobs and their
// relabelling).
func Config(o Options) (string, error) {
	if o.TrustDomain == "" {
		o.TrustDomain = "cluster.local"
	}
	if errs := validation.IsDNS1123Subdomain(o.TrustDomain); len(errs) > 0 {
		return "", fmt.Errorf("--trust-domain %q: %s", o.TrustDomain, errs[0])
	}
	if o.ScrapeInterval == 0 {
		o.ScrapeInterval = 10 * time.Second
	}
	if o.ScrapeInterval < time.Second {
		return "", fmt.Errorf("--scrape-interval %s: at least 1s", o.ScrapeInterval)
	}
	timeout := min(o.ScrapeInterval, 10*time.Second)
	var b bytes.Buffer
	err := promConfT.Execute(&b, map[string]string{
		"TrustDomain":           o.TrustDomain,
		"ScrapeInterval":        fmt.Sprintf("%ds", int(o.ScrapeInterval/time.Second)),
		"ScrapeTimeout":         fmt.Sprintf("%ds", int(timeout/time.Second)),
		"ControlPlaneNamespace": k8slabels.ControlPlaneNamespace,
	})
	if err != nil {
		return "", fmt.Errorf("render prometheus.yml: %w", err)
	}
	return b.String(), nil
}

// Manifest parses the rendered YAML into install's objects (for --apply).
func Manifest(yaml []byte) (*install.Manifest, error) {
	objs, err := install.ParseDocuments(yaml, "viz")
	if err != nil {
		return nil, err
	}
	return &install.Manifest{Objects: objs}, nil
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = pad + l
		}
	}
	return strings.Join(lines, "\n")
}
