package storeroutes

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
)

// exists: the file has shop/books (8080) and shop/books-v1, -v2 (8080).
func exists(ns, name string, port uint32) bool {
	return ns == "shop" && (name == "books" || name == "books-v1" || name == "books-v2") && (port == 0 || port == 8080)
}

func build(t *testing.T, doc string) (Routes, error) {
	t.Helper()
	var f meshconfig.File
	if err := yaml.UnmarshalStrict([]byte(doc), &f); err != nil {
		t.Fatal(err)
	}
	return Build(f.Routes, exists)
}

const head = `routes:
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: split, namespace: shop}
  spec:
`

func TestBuild(t *testing.T) {
	ok, err := build(t, head+`    parentRefs: [{kind: Service, name: books, port: 8080}]
    rules: [{backendRefs: [{name: books-v1, port: 8080, weight: 90}, {name: books-v2, port: 8080, weight: 10}]}]
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata: {name: g, namespace: shop}
  spec:
    parentRefs: [{kind: Service, name: books}]
    rules: [{matches: [{method: {service: a.B}}]}]
- apiVersion: gateway.networking.k8s.io/v1
  kind: ReferenceGrant
  metadata: {name: from-web, namespace: shop}
  spec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}], to: [{group: "", kind: Service}]}
`)
	if err != nil || len(ok.Routes) != 2 || len(ok.Grants) != 1 {
		t.Fatalf("valid file: %v, %d routes, %d grants", err, len(ok.Routes), len(ok.Grants))
	}
	if !ok.Routes[0].Meta.CreationTimestamp.Before(&ok.Routes[1].Meta.CreationTimestamp) {
		t.Error("file order is not creation order")
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", head + "    parentRefs: [{kind: Service, name: books}]\n    rulez: []\n", `routes[0] (HTTPRoute shop/split): spec: json: unknown field "rulez"`},
		{"a Server parent", head + "    parentRefs: [{kind: Server, name: books}]\n", "routes[0] (HTTPRoute shop/split): spec.parentRefs[0]: in local mode a parent is a Service"},
		{"a Gateway parent", head + "    parentRefs: [{name: books}]\n", "spec.parentRefs[0]"},
		{"no parent", head + "    rules: []\n", "spec.parentRefs: required"},
		{"a port the parent lacks", head + "    parentRefs: [{kind: Service, name: books, port: 9}]\n", "spec.parentRefs[0]"},
		{"missing backend", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{backendRefs: [{name: books-v3, port: 8080}]}]\n",
			"spec.rules[0].backendRefs[0]: no Service shop/books-v3 with port 8080"},
		{"backend without port", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{backendRefs: [{name: books-v1}]}]\n", "spec.rules[0].backendRefs[0]: port: required"},
		{"bad regex", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{matches: [{path: {type: RegularExpression, value: '(('}}]}]\n", "spec.rules[0].matches[0]: regular expression"},
		{"custom filter", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: Auth, name: z}}]}]\n", "spec.rules[0].filters[0]: ExtensionRef x.io/Auth \"z\": Trellis resolves no custom filter; the rule's requests are answered 500 in a cluster; in local mode it is refused"},
		{"backend custom filter", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{backendRefs: [{name: books-v1, port: 8080, filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: Sign, name: z}}]}]}]\n", "spec.rules[0].backendRefs[0].filters[0]: ExtensionRef x.io/Sign"},
		{"unimplemented filter", head + "    parentRefs: [{kind: Service, name: books}]\n    rules: [{filters: [{type: CORS, cors: {allowOrigins: ['https://a.example']}}]}]\n", "spec.rules[0].filters: [0]: type \"CORS\" is not supported"},
		{"bad annotation", strings.Replace(head, "namespace: shop}", "namespace: shop, annotations: {fault.trellis.io/abort-percent: '200'}}", 1) + "    parentRefs: [{kind: Service, name: books}]\n", "metadata.annotations: fault.trellis.io/abort-percent"},
		{"wrong apiVersion", strings.Replace(head, "gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1", 1) + "    parentRefs: []\n", "apiVersion"},
		{"duplicate", head + "    parentRefs: [{kind: Service, name: books}]\n" + strings.TrimPrefix(head, "routes:\n") + "    parentRefs: [{kind: Service, name: books}]\n", "routes[1] (HTTPRoute shop/split): duplicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := build(t, tc.doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
