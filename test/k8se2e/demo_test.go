package k8se2e

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"text/template"
	"time"
)

// The demo application (demoapp, docs/demo.md) as a user deploys it in a
// namespace annotated for injection: web -> books (HTTP) -> authors (gRPC),
// each with its own ServiceAccount so every hop has its own SPIFFE
// identity. The apps dial the Services' DNS names directly (--proxy ''):
// the iptables rules of trellis-init send the traffic through the proxy.

// demoServers is the namespace, the ServiceAccounts, the Services and the
// three server Deployments.
var demoServers = template.Must(template.New("servers").Parse(`
apiVersion: v1
kind: Namespace
metadata:
  name: {{.NS}}
  annotations: {trellis.io/inject: enabled}
{{- range $sa := .ServiceAccounts}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: {{$sa}}, namespace: {{$.NS}}}
{{- end}}
{{- range $svc := .Services}}
---
apiVersion: v1
kind: Service
metadata: {name: {{$svc.Name}}, namespace: {{$.NS}}}
spec:
  selector: {app: {{$svc.Name}}}
  ports: [{name: {{$svc.Port}}, port: 80, targetPort: 8080{{if $svc.AppProtocol}}, appProtocol: {{$svc.AppProtocol}}{{end}}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{$svc.Name}}, namespace: {{$.NS}}}
spec:
  replicas: {{if eq $svc.Name "books"}}{{$.BooksReplicas}}{{else}}1{{end}}
  selector: {matchLabels: {app: {{$svc.Name}}}}
  template:
    metadata: {labels: {app: {{$svc.Name}}}}
    spec:
      serviceAccountName: {{$svc.Name}}
      containers:
      - name: app
        image: {{$.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role={{$svc.Name}}, --listen=0.0.0.0:8080, --proxy=, {{$svc.Args $.NS}}]
        ports: [{name: {{$svc.Port}}, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 2
{{- end}}
`[1:]))

// loadgen sends steady load to Target; with Duration it is a Job that
// prints its result and completes, without one a Deployment.
var loadgen = template.Must(template.New("loadgen").Parse(`
{{- if .Duration}}
apiVersion: batch/v1
kind: Job
metadata: {name: {{.Name}}, namespace: {{.NS}}}
spec:
  backoffLimit: 0
  template:
    metadata: {labels: {app: {{.Name}}}}
    spec:
      restartPolicy: Never
{{- else}}
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{.Name}}, namespace: {{.NS}}}
spec:
  replicas: 1
  selector: {matchLabels: {app: {{.Name}}}}
  template:
    metadata: {labels: {app: {{.Name}}}}
    spec:
{{- end}}
      serviceAccountName: loadgen
      containers:
      - name: app
        image: {{.Image}}
        imagePullPolicy: IfNotPresent
        args: [--role=loadgen, --proxy=, --target={{.Target}}, --path={{.Path}}, --rps={{.RPS}}{{if .Duration}}, --duration={{.Duration}}{{end}}]
`[1:]))

type demoService struct{ Name, Port, AppProtocol string }

// Args is the flag naming the service this one calls.
func (s demoService) Args(ns string) string {
	switch s.Name {
	case "web":
		return "--books=books." + ns + ".svc.cluster.local:80"
	case "books":
		return "--authors=authors." + ns + ".svc.cluster.local:80"
	}
	return "--log-level=info"
}

var demoServices = []demoService{
	{Name: "authors", Port: "grpc", AppProtocol: "grpc"},
	{Name: "books", Port: "http"},
	{Name: "web", Port: "http"},
}

type demoParams struct {
	NS              string
	Image           string
	BooksReplicas   int
	ServiceAccounts []string
	Services        []demoService
}

type loadParams struct {
	NS, Name, Image, Target, Path string
	RPS                           int
	Duration                      time.Duration // 0: a Deployment
}

func render(t *testing.T, tmpl *template.Template, data any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tmpl.Execute(&b, data); err != nil {
		t.Fatalf("rendering %s: %v", tmpl.Name(), err)
	}
	return b.Bytes()
}

// deployDemo creates the namespace (deleted at the end of the test) and
// the three servers, and waits for them to be rolled out.
func (c *cluster) deployDemo(t *testing.T, ns string, booksReplicas int) {
	t.Helper()
	c.namespace(t, ns)
	c.waitInjector(t)
	c.mustRun(t, render(t, demoServers, demoParams{
		NS: ns, Image: c.image("demo-app"), BooksReplicas: booksReplicas,
		ServiceAccounts: []string{"authors", "books", "web", "loadgen"}, Services: demoServices,
	}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web")
	for _, p := range c.pods(t, ns, "") {
		if p.DeletionTimestamp != nil {
			continue
		}
		if err := meshed(p, c.tag); err != nil {
			t.Fatal(err)
		}
	}
}

// waitInjector waits until the API server really calls the injector: a
// server-side dry-run pod annotated for injection comes back with the
// proxy. The controller's readiness is not enough: with failurePolicy
// Ignore, a pod created before the API server can reach the webhook
// through the Service starts silently without a proxy.
func (c *cluster) waitInjector(t *testing.T) {
	t.Helper()
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"e2e-probe-","namespace":"default",` +
		`"annotations":{"trellis.io/inject":"enabled"}},"spec":{"containers":[{"name":"app","image":"` + c.image("demo-app") + `"}]}}`
	start := time.Now()
	tries := 0
	eventually(t, 2*time.Minute, "the API server calls the injector", func() error {
		tries++
		out, err := c.run(t.Context(), []byte(pod), "create", "--dry-run=server", "-o", "jsonpath={.spec.initContainers[*].name}", "-f", "-")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "trellis-proxy") {
			return fmt.Errorf("dry-run pod not injected (init containers %q)", out)
		}
		return nil
	})
	if tries > 1 {
		t.Logf("injector effective %s after the controller was ready (%d dry-run pods refused or not injected first)", time.Since(start).Round(100*time.Millisecond), tries-1)
	}
}

// startLoad applies a loadgen Job or Deployment.
func (c *cluster) startLoad(t *testing.T, p loadParams) {
	t.Helper()
	p.Image = c.image("demo-app")
	if p.Path == "" {
		p.Path = "/books/"
	}
	c.mustRun(t, render(t, loadgen, p), "apply", "--server-side", "-f", "-")
}
