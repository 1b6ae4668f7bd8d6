// Package demok8s renders the demo application (demoapp, the same
// web -> books -> authors of `trellis demo`) as Kubernetes manifests in a
// namespace annotated for injection, for `trellis demo --kubernetes`.
package demok8s

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"text/template"

	"k8s.io/apimachinery/pkg/util/validation"
)

//go:embed demo.yaml.tmpl
var manifest string

var tmpl = template.Must(template.New("demo").Parse(manifest))

// DefaultNamespace is where the demo goes unless told otherwise.
const DefaultNamespace = "trellis-demo"

// Options of Render.
type Options struct {
	Namespace string // default DefaultNamespace
	Image     string // the trellis-demo-app image, required
	RPS       int    // requests per second of the load generator, >= 1
}

type workload struct {
	Name, Port, AppProtocol string
	Args                    []string
}

// Render returns the multi-document YAML of the demo.
func Render(o Options) ([]byte, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", o.Namespace, errs[0])
	}
	if o.Image == "" {
		return nil, errors.New("the demo app image is required")
	}
	if o.RPS < 1 {
		return nil, fmt.Errorf("--rps %d: must be at least 1", o.RPS)
	}
	svc := func(name string) string { return name + "." + o.Namespace + ".svc.cluster.local:80" }
	// The apps dial the Services' names directly (--proxy=): trellis-init's
	// iptables rules send their traffic through the injected proxy.
	data := struct {
		Namespace, Image string
		Workloads        []workload
	}{o.Namespace, o.Image, []workload{
		{Name: "authors", Port: "grpc", AppProtocol: "grpc", Args: []string{"--role=authors", "--listen=0.0.0.0:8080", "--proxy="}},
		{Name: "books", Port: "http", Args: []string{"--role=books", "--listen=0.0.0.0:8080", "--proxy=", "--authors=" + svc("authors")}},
		{Name: "web", Port: "http", Args: []string{"--role=web", "--listen=0.0.0.0:8080", "--proxy=", "--books=" + svc("books")}},
		{Name: "loadgen", Args: []string{"--role=loadgen", "--proxy=", "--target=" + svc("web"), "--path=/books/", "--rps=" + strconv.Itoa(o.RPS)}},
	}}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("render the demo: %w", err)
	}
	return b.Bytes(), nil
}
