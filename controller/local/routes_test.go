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
