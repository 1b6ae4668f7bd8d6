package routemodel

import (
	"encoding/json"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellis-mesh/trellis/internal/routematch"
)

// FuzzTranslate: any HTTPRoute or GRPCRoute spec (as a cluster or a
// store file could hold it, the CRD's validation aside) translates
// without a panic into an answer whose expressions compile and whose
// plain matches the proxy's matcher accepts, and a status per Service
// parent.
func FuzzTranslate(f *testing.F) {
	f.Add([]byte(`{"parentRefs":[{"kind":"Service","name":"books"}],"rules":[{"matches":[{"path":{"type":"RegularExpression","value":"/a+"},"queryParams":[{"name":"q","value":"1"}]}],"backendRefs":[{"name":"books-v1","port":8080,"weight":9}],"filters":[{"type":"RequestMirror","requestMirror":{"backendRef":{"name":"mirror","port":80},"fraction":{"numerator":1,"denominator":0}}}]}]}`), false)
	f.Add([]byte(`{"parentRefs":[{"kind":"Service","name":"books","port":8080}],"rules":[{"matches":[{"method":{"type":"RegularExpression","service":"(","method":"x"}}],"backendRefs":[{"name":"books-v1","port":8080}]}]}`), true)
	f.Add([]byte(`{"parentRefs":[{"kind":"Service","name":"books"}],"rules":[{"filters":[{"type":"RequestRedirect","requestRedirect":{"path":{"type":"ReplacePrefixMatch"}}},{"type":"URLRewrite"}]}]}`), false)
	fx := loadFixture(f, "mesh.yaml")
	f.Fuzz(func(t *testing.T, spec []byte, grpc bool) {
		meta := metav1.ObjectMeta{Name: "fuzz", Namespace: "shop", Annotations: map[string]string{AnnotationRetryLimit: "2"}}
		var r Route
		if grpc {
			gr := &gwv1.GRPCRoute{ObjectMeta: meta}
			if json.Unmarshal(spec, &gr.Spec) != nil {
				return
			}
			r = FromGRPC(gr)
		} else {
			hr := &gwv1.HTTPRoute{ObjectMeta: meta}
			if json.Unmarshal(spec, &hr.Spec) != nil {
				return
			}
			r = FromHTTP(hr)
		}
		in := Input{Service: fx.Service("shop", "books"), Port: 8080, CallerNamespace: "shop",
			Routes: append([]Route{r}, fx.Routes...), ClusterDomain: "cluster.local", Lookup: fx.Static}
		rc := Config(in, books)
		for _, route := range rc.GetRoutes() {
			for _, m := range route.GetMatches() {
				if err := checkExpressions(m); err != nil {
					t.Fatalf("an expression that does not compile was sent: %v", err)
				}
				if m.GetPathRegex() == "" && len(m.GetQueryParams()) == 0 {
					if _, err := routematch.Compile(m); err != nil {
						t.Fatalf("a match the proxy refuses was sent: %v: %v", m, err)
					}
				}
			}
		}
		for _, p := range ParentStatuses(&r, fx.Static, "cluster.local") {
			if len(p.Conditions) != 2 || p.ControllerName != ControllerName {
				t.Fatalf("status entry %+v", p)
			}
		}
	})
}
