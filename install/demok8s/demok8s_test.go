package demok8s

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/demoapp/app"
)

// TestRenderedDemoIsMeshedAndWired decodes every rendered object strictly
// into its Kubernetes type and checks that the namespace asks for
// injection, each workload runs as its own ServiceAccount (its own SPIFFE
// identity) and every service a workload calls exists with that port.
func TestRenderedDemoIsMeshedAndWired(t *testing.T) {
	out, err := Render(Options{Namespace: "shop", Image: "reg/trellis/demo-app:v1", RPS: 7})
	if err != nil {
		t.Fatal(err)
	}
	objs := split(t, out)
	sas, svcs := map[string]bool{}, map[string]bool{}
	var deps []appsv1.Deployment
	var ns corev1.Namespace
	for _, o := range objs {
		switch o.Kind {
		case "Namespace":
			mustDecode(t, o.YAML, &ns)
		case "ServiceAccount":
			var sa corev1.ServiceAccount
			mustDecode(t, o.YAML, &sa)
			sas[sa.Name] = sa.Namespace == "shop"
		case "Service":
			var s corev1.Service
			mustDecode(t, o.YAML, &s)
			svcs[s.Name+".shop.svc.cluster.local:"+itoa(s.Spec.Ports[0].Port)] = s.Namespace == "shop"
		case "Deployment":
			var d appsv1.Deployment
			mustDecode(t, o.YAML, &d)
			deps = append(deps, d)
		default:
			t.Errorf("unexpected %s", o.Kind)
		}
	}
	if ns.Name != "shop" || ns.Annotations["trellis.io/inject"] != "enabled" {
		t.Errorf("namespace %s annotations %v: not annotated for injection", ns.Name, ns.Annotations)
	}
	roles := map[string]bool{}
	for _, d := range deps {
		spec := d.Spec.Template.Spec
		if !sas[spec.ServiceAccountName] || d.Namespace != "shop" {
			t.Errorf("deployment %s/%s runs as %q, not a ServiceAccount of the demo", d.Namespace, d.Name, spec.ServiceAccountName)
		}
		c := spec.Containers[0]
		if c.Image != "reg/trellis/demo-app:v1" {
			t.Errorf("%s image %s", d.Name, c.Image)
		}
		for _, a := range c.Args {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "--role":
				if !strings.Contains(" "+strings.Join(app.Roles(), " ")+" ", " "+v+" ") {
					t.Errorf("%s: role %q is not one of %v", d.Name, v, app.Roles())
				}
				roles[v] = true
			case "--books", "--authors", "--target":
				if !svcs[v] {
					t.Errorf("%s calls %s, which is no Service of the demo (%v)", d.Name, v, svcs)
				}
			case "--rps":
				if v != "7" {
					t.Errorf("loadgen rps %s", v)
				}
			}
		}
	}
	for _, r := range []string{"web", "books", "authors", "loadgen"} {
		if !roles[r] {
			t.Errorf("no %s workload", r)
		}
	}
}

func TestRenderRefusesBadOptions(t *testing.T) {
	for _, o := range []Options{
		{Namespace: "Shop", Image: "x", RPS: 1},
		{Image: "", RPS: 1},
		{Image: "x", RPS: 0},
	} {
		if _, err := Render(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func mustDecode(t *testing.T, data []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(data, into); err != nil {
		t.Fatalf("%v:\n%s", err, data)
	}
}

func itoa(p int32) string { return strconv.Itoa(int(p)) }

type object struct {
	Kind string
	YAML []byte
}

func split(t *testing.T, data []byte) []object {
	t.Helper()
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var tm struct{ Kind string }
		if err := yaml.Unmarshal(doc, &tm); err != nil || tm.Kind == "" {
			t.Fatalf("document without kind (%v):\n%s", err, doc)
		}
		out = append(out, object{tm.Kind, doc})
	}
}
