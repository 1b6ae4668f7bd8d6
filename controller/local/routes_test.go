package local

import (
	"context"
	"strconv"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

const versionServices = `
  - name: books-v1
    namespace: demo
    ports: [{port: 80}]
  - name: books-v2
    namespace: demo
    ports: [{port: 80}]
`

func routeYAML(v1, v2 string) string {
	return `routes:
  - apiVersion: gateway.networking.k8s.io/v1
    kind: HTTPRoute
    metadata: {name: books-split, namespace: demo}
    spec:
      parentRefs: [{kind: Service, name: books, port: 80}]
      rules:
      - backendRefs:
        - {name: books-v1, port: 80, weight: ` + v1 + `}
        - {name: books-v2, port: 80, weight: ` + v2 + `}
`
}

// withServices inserts the version Services into meshYAML's services.
func withServices(routes string) string {
	return strings.Replace(meshYAML, "services:\n", "services:"+versionServices, 1) + routes
}

// The store file's routes reach GetRoutes, and an edit of the file shifts
// the split on the open stream; an edit the store refuses changes nothing.
func TestRoutesFromStoreLive(t *testing.T) {
	e := startController(t, withServices(routeYAML("90", "10")))
	dst := apiv1.NewDestinationClient(e.dial(t, nil))
	routes := openStream[*apiv1.RouteConfig](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.RouteConfig, error)
	}, error) {
		return dst.GetRoutes(ctx, &apiv1.GetDestination{Path: "books.demo:80", CallerIdentity: webID.String()})
	})
	weights := func(rc *apiv1.RouteConfig) string {
		var b strings.Builder
		for _, r := range rc.GetRoutes() {
			for _, wb := range r.GetBackends() {
				b.WriteString(wb.GetAuthority() + "=" + itoa(wb.GetWeight()) + " ")
			}
		}
		return strings.TrimSpace(b.String())
	}
	const want1 = "books-v1.demo.svc.cluster.local:80=90 books-v2.demo.svc.cluster.local:80=10"
	if got := weights(routes.next(t)); got != want1 {
		t.Fatalf("first answer %q, want %q", got, want1)
	}
	// Refused: a backend the file does not have. The stream keeps 90/10.
	e.writeAtomic(t, withServices(strings.Replace(routeYAML("90", "10"), "books-v2", "books-v3", 1)))
	e.writeAtomic(t, withServices(routeYAML("0", "100")))
	const want2 = "books-v1.demo.svc.cluster.local:80=0 books-v2.demo.svc.cluster.local:80=100"
	if got := weights(routes.next(t)); got != want2 {
		t.Fatalf("after the edit %q, want %q (a refused edit must send nothing)", got, want2)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func limitYAML(rps string) string {
	return `policies:
  - apiVersion: policy.trellis.io/v1alpha1
    kind: RateLimit
    metadata: {name: books-limit, namespace: demo}
    spec:
      targetRef: {kind: Service, name: books}
      requestsPerSecond: ` + rps + `
      burst: 20
`
}

// A RateLimit on a Service in the store file reaches GetRoutes as the
// service's outbound limit, and an edit of the file changes it on the
// open stream; an edit the store refuses (a Server's field on a
// Service's limit) changes nothing.
func TestOutboundLimitFromStoreLive(t *testing.T) {
	e := startController(t, meshYAML+limitYAML("10"))
	dst := apiv1.NewDestinationClient(e.dial(t, nil))
	routes := openStream[*apiv1.RouteConfig](t, func(ctx context.Context) (interface {
		Recv() (*apiv1.RouteConfig, error)
	}, error) {
		return dst.GetRoutes(ctx, &apiv1.GetDestination{Path: "books.demo:80", CallerIdentity: webID.String()})
	})
	if l := routes.next(t).GetLimit(); l.GetName() != "demo/books-limit" || l.GetRequestsPerSecond() != 10 || l.GetBurst() != 20 {
		t.Fatalf("first answer's limit %v, want demo/books-limit 10/s burst 20", l)
	}
	e.writeAtomic(t, meshYAML+limitYAML("10")+"      concurrency: 3\n")
	e.writeAtomic(t, meshYAML+limitYAML("25"))
	if l := routes.next(t).GetLimit(); l.GetRequestsPerSecond() != 25 {
		t.Fatalf("after the edit: limit %v, want 25/s (a refused edit must send nothing)", l)
	}
	e.writeAtomic(t, meshYAML)
	if l := routes.next(t).GetLimit(); l != nil {
		t.Fatalf("after the RateLimit went: limit %v, want none", l)
	}
}
