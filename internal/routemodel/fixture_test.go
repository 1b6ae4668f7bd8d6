package routemodel

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// fixture is the objects of testdata files.
type fixture struct {
	Static
	Routes []Route
}

func loadFixture(t testing.TB, files ...string) fixture {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, gwv1.Install} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(s).UniversalDeserializer()
	var f fixture
	for _, name := range files {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatal(err)
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			switch o := obj.(type) {
			case *corev1.Service:
				f.Services = append(f.Services, o)
			case *gwv1.ReferenceGrant:
				f.Grants = append(f.Grants, o)
			case *gwv1.HTTPRoute:
				f.Routes = append(f.Routes, FromHTTP(o))
			case *gwv1.GRPCRoute:
				f.Routes = append(f.Routes, FromGRPC(o))
			default:
				t.Fatalf("%s: unexpected %T", name, obj)
			}
		}
	}
	return f
}

func (f fixture) route(t testing.TB, ns, name string) *Route {
	t.Helper()
	for i := range f.Routes {
		if r := &f.Routes[i]; r.Meta.Namespace == ns && r.Meta.Name == name {
			return r
		}
	}
	t.Fatalf("no route %s/%s", ns, name)
	return nil
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
