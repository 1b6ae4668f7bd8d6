package k8se2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

// The tracing suite's collector: Jaeger (test/collector, imported into
// the cluster by the harness as trellis.local/jaeger), not meshed, in the
// suite's namespace.
const collectorManifest = `
apiVersion: v1
kind: Namespace
metadata: {name: %[1]s}
---
apiVersion: v1
kind: Service
metadata: {name: jaeger, namespace: %[1]s}
spec:
  selector: {app: jaeger}
  ports:
  - {name: otlp-grpc, port: 4317, appProtocol: grpc}
  - {name: query, port: 16686}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: jaeger, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: jaeger}}
  template:
    metadata:
      labels: {app: jaeger}
      annotations: {trellis.io/inject: disabled}
    spec:
      containers:
      - name: jaeger
        image: trellis.local/jaeger:v1.75.0
        imagePullPolicy: Never
        ports: [{containerPort: 4317}, {containerPort: 16686}]
        readinessProbe:
          httpGet: {path: /api/services, port: 16686}
          periodSeconds: 2
`

// TestTracing: with the namespace annotated with a collector
// (config.trellis.io/trace-collector, so every demo pod's proxy gets it
// from the injector), Jaeger holds a complete trace of a request through
// loadgen -> web -> books -> authors: a client and a server span of every
// hop, each naming both identities, over mTLS.
func TestTracing(t *testing.T) {
	c := newCluster(t)
	needExtraImages(t)
	c.sharedInstall(t)
	const ns = "e2e-tracing"
	c.namespace(t, ns)
	c.mustRun(t, []byte(fmt.Sprintf(collectorManifest, ns)), "apply", "--server-side", "-f", "-")
	c.mustRun(t, nil, "annotate", "--overwrite", "namespace", ns,
		"config.trellis.io/trace-collector=jaeger."+ns+".svc.cluster.local:4317")
	c.rollout(t, ns, "jaeger")
	// deployDemo's servers, in the namespace made here (deployDemo would
	// make it anew, without the annotation).
	c.waitInjector(t)
	c.mustRun(t, render(t, demoServers, demoParams{
		NS: ns, Image: c.image("demo-app"), BooksReplicas: 1,
		ServiceAccounts: []string{"authors", "books", "web", "loadgen"}, Services: demoServices,
	}), "apply", "--server-side", "-f", "-")
	c.rollout(t, ns, "authors", "books", "web")
	c.startLoad(t, loadParams{NS: ns, Name: "loadgen", Target: "web." + ns + ".svc.cluster.local:80", RPS: 5})

	id := func(sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }
	hops := []harness.Hop{
		{Client: "loadgen", Server: "web", ClientIdentity: id("loadgen"), ServerIdentity: id("web")},
		{Client: "web", Server: "books", ClientIdentity: id("web"), ServerIdentity: id("books")},
		{Client: "books", Server: "authors", ClientIdentity: id("books"), ServerIdentity: id("authors")},
	}
	start := time.Now()
	eventually(t, 3*time.Minute, "a complete trace in Jaeger", func() error {
		out, err := c.run(t.Context(), nil, "get", "--raw",
			"/api/v1/namespaces/"+ns+"/services/jaeger:16686/proxy"+harness.TracesPath("authors", 20))
		if err != nil {
			return err
		}
		traces, err := harness.ParseTraces([]byte(out))
		if err != nil {
			return err
		}
		last := fmt.Errorf("jaeger has no trace with a span of authors yet")
		for _, tr := range traces {
			if last = harness.CheckHops(tr, hops); last == nil {
				t.Logf("trace %s: %d spans of %v", tr.TraceID, len(tr.Spans), tr.Services())
				return nil
			}
		}
		return last
	})
	t.Logf("a complete trace %s after the load started", time.Since(start).Round(time.Second))
}
