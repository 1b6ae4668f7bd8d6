package routemodel

import (
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

const books = "books.shop.svc.cluster.local:8080"

// booksOld is the older producer route on every port of books: a regex
// redirect, and a rewrite whose missing backend keeps its weight.
const booksOld = `routes { name: "shop/books-old" kind: "http"
  matches { path_regex: "/legacy/[0-9]+" }
  redirect { scheme: "https" prefix_match: "/v2" status_code: 301 } }
routes { name: "shop/books-old" kind: "http" rule: 1
  matches { path_exact: "/rewrite" }
  backends { weight: 3 }
  backends { authority: "books-v1.shop.svc.cluster.local:8080" weight: 1 }
  rewrite { hostname: "books.internal" full_path: "/new" } }`

func TestConfig(t *testing.T) {
	cases := []struct {
		name   string
		files  []string
		svc    string // ns/name
		port   int32
		caller string
		want   string // prototext of the RouteConfig
	}{{
		name: "producer routes oldest first; regex redirect; rewrite with a missing backend keeping its weight",
		svc:  "shop/books", port: 8080, caller: "shop",
		want: `service: "` + books + `"
` + booksOld + `
routes { name: "shop/books-split" kind: "http"
  matches { path_prefix: "/api" method: "GET" headers { name: "x-canary" value: "true" } query_params { name: "v" value: "2" } }
  backends { authority: "books-v2.shop.svc.cluster.local:8080" weight: 1 }
  timeout { seconds: 10 } backend_timeout { seconds: 2 }
  request_headers { set { name: "x-route" value: "canary" } add { name: "x-seen" value: "1" } remove: "x-debug" }
  retry { max_retries: 2 retry_on_status: [502, 503, 504] }
  fault { abort_millionths: 5000 abort_http_status: 503 abort_grpc_status: 14 } }
routes { name: "shop/books-split" kind: "http" rule: 1
  backends { authority: "books-v1.shop.svc.cluster.local:8080" weight: 90 }
  backends { authority: "books-v2.shop.svc.cluster.local:8080" weight: 10 response_headers { set { name: "x-version" value: "v2" } } }
  retry { max_retries: 2 retry_on_status: [502, 503, 504] }
  mirrors { authority: "mirror.shop.svc.cluster.local:80" millionths: 50000 }
  fault { abort_millionths: 5000 abort_http_status: 503 abort_grpc_status: 14 } }`,
	}, {
		name: "a parentRef with a port applies to that port only; a custom filter answers 500 to what it would process; an invalid or unimplemented filter leaves its route out",
		svc:  "shop/books", port: 9090, caller: "shop",
		want: `service: "books.shop.svc.cluster.local:9090"
` + booksOld + `
routes { name: "shop/books-ext" kind: "http"
  matches { path_prefix: "/admin" }
  backends { weight: 1 } }
routes { name: "shop/books-ext" kind: "http" rule: 1
  backends { authority: "books-v1.shop.svc.cluster.local:8080" weight: 3 }
  backends { weight: 1 } }`,
	}, {
		name: "consumer route replaces the producer routes; without a ReferenceGrant its cross-namespace backend answers 500",
		svc:  "shop/books", port: 8080, caller: "reviews",
		want: `service: "` + books + `"
routes { name: "reviews/books-for-reviews" kind: "http"
  backends { weight: 1 }
  backends { authority: "ratings.reviews.svc.cluster.local:8080" weight: 1 } }`,
	}, {
		name:  "a ReferenceGrant lets the consumer route's backend resolve",
		files: []string{"grants.yaml"},
		svc:   "shop/books", port: 8080, caller: "reviews",
		want: `service: "` + books + `"
routes { name: "reviews/books-for-reviews" kind: "http"
  backends { authority: "books-v1.shop.svc.cluster.local:8080" weight: 1 }
  backends { authority: "ratings.reviews.svc.cluster.local:8080" weight: 1 } }`,
	}, {
		name: "gRPC: service/method to paths, a method alone to an expression, a fraction mirror",
		svc:  "reviews/ratings-grpc", port: 50051, caller: "shop",
		want: `service: "ratings-grpc.reviews.svc.cluster.local:50051"
routes { name: "reviews/ratings" kind: "grpc"
  matches { path_exact: "/reviews.Ratings/Get" }
  matches { path_regex: "^/[^/]+/Watch$" }
  backends { authority: "ratings-grpc.reviews.svc.cluster.local:50051" weight: 1 }
  mirrors { authority: "ratings-grpc.reviews.svc.cluster.local:50051" millionths: 333333 } }`,
	}, {
		name: "a service no route names",
		svc:  "shop/mirror", port: 80, caller: "shop",
		want: `service: "mirror.shop.svc.cluster.local:80"`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := loadFixture(t, append([]string{"mesh.yaml"}, tc.files...)...)
			ns, name, _ := strings.Cut(tc.svc, "/")
			svc := f.Service(ns, name)
			in := Input{Service: svc, Port: tc.port, CallerNamespace: tc.caller, Routes: f.Routes, ClusterDomain: "cluster.local", Lookup: f.Static}
			auth := name + "." + ns + ".svc.cluster.local:" + itoa(tc.port)
			got := Config(in, auth)
			want := &apiv1.RouteConfig{}
			if err := prototext.Unmarshal([]byte(tc.want), want); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("got\n%s\nwant\n%s", prototext.Format(got), prototext.Format(want))
			}
		})
	}
}

// Many large routes on one Service: the answer stays under the bound,
// keeping the oldest routes' rules.
func TestConfigBounded(t *testing.T) {
	f := loadFixture(t, "mesh.yaml")
	base := f.route(t, "shop", "books-split")
	long := strings.Repeat("x", 4000)
	var routes []Route
	for i := range 400 {
		r := *base
		meta := *base.Meta
		meta.Name = fmt.Sprintf("r%03d", i)
		meta.CreationTimestamp = metav1.NewTime(time.Unix(int64(i), 0))
		r.Meta = &meta
		r.Rules = []Rule{{Matches: []*apiv1.RouteMatch{{PathExact: "/" + long}}}}
		routes = append(routes, r)
	}
	in := Input{Service: f.Service("shop", "books"), Port: 8080, Routes: routes, ClusterDomain: "cluster.local", Lookup: f.Static}
	rc := Config(in, books)
	if n := proto.Size(rc); n > MaxConfigBytes {
		t.Fatalf("answer of %d bytes, over %d", n, MaxConfigBytes)
	}
	if rs := rc.GetRoutes(); len(rs) == 0 || len(rs) == 400 || rs[0].GetName() != "shop/r000" {
		t.Fatalf("%d routes kept (%v...): want the oldest, not all", len(rs), names(rs[:min(len(rs), 1)]))
	}
}

func names(rs []*apiv1.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}
