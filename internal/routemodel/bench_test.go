package routemodel

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkConfig: one GetRoutes answer of a Service with 100 routes of
// the canary-split shape (what a stream wake-up costs the controller).
func BenchmarkConfig(b *testing.B) {
	f := loadFixture(b, "mesh.yaml")
	base := f.route(b, "shop", "books-split")
	var routes []Route
	for i := range 100 {
		r := *base
		meta := *base.Meta
		meta.Name = fmt.Sprintf("r%03d", i)
		meta.CreationTimestamp = metav1.NewTime(time.Unix(int64(i), 0))
		r.Meta = &meta
		routes = append(routes, r)
	}
	in := Input{Service: f.Service("shop", "books"), Port: 8080, CallerNamespace: "shop", Routes: routes, ClusterDomain: "cluster.local", Lookup: f.Static}
	b.ReportAllocs()
	for b.Loop() {
		if rc := Config(in, books); len(rc.GetRoutes()) != 200 {
			b.Fatalf("%d routes", len(rc.GetRoutes()))
		}
	}
}
