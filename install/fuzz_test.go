package install

import (
	"strings"
	"sync"
	"testing"
)

func FuzzParseSet(f *testing.F) {
	for _, s := range []string{"image.tag=v1", "a=1,b=2", "=x", "a.b.=c", "a==b", "", ",", "proxy.resources.limits.memory=1Gi"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		kvs, err := ParseSet(arg)
		if err != nil {
			return
		}
		for _, kv := range kvs {
			if checkKey(kv[0]) != nil || strings.Contains(kv[1], ",") {
				t.Fatalf("ParseSet(%q) returned bad pair %q", arg, kv)
			}
		}
	})
}

func FuzzParseDocuments(f *testing.F) {
	f.Add("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: b, labels: {app.kubernetes.io/part-of: trellis, app.kubernetes.io/managed-by: trellis}}\n")
	f.Add("---\n# only a comment\n---\n")
	f.Add("apiVersion: v1\nkind: Namespace\nmetadata: {name: x, namespace: y}\n")
	f.Add("kind: [\n")
	f.Fuzz(func(t *testing.T, data string) {
		objs, err := ParseDocuments([]byte(data), "fuzz")
		if err != nil {
			return
		}
		for _, o := range objs {
			if o.Name == "" || (o.Kind.Namespaced != (o.Namespace != "")) {
				t.Fatalf("accepted %+v", o)
			}
		}
	})
}

var fuzzMaterial struct {
	once sync.Once
	id   Identity
	wh   WebhookTLS
}

// FuzzSetStringValues renders with arbitrary text in string values: the
// chart must either refuse it or carry it verbatim, never let it change
// the structure of the output (YAML injection).
func FuzzSetStringValues(f *testing.F) {
	for _, s := range []string{"debug", "x\ny: z", "\"quoted\"", "a: b", "{}", "--- ", "'", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		fuzzMaterial.once.Do(func() { fuzzMaterial.id, fuzzMaterial.wh = testMaterial(t) })
		if strings.ContainsAny(value, ",") {
			return // --set splits on commas
		}
		v, err := DefaultValues(false)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"image.tag", "image.registry", "proxy.resources.limits.memory"} {
			if err := v.Set(key, value); err != nil {
				return // refused (not UTF-8)
			}
		}
		v.Merge(MaterialValues(fuzzMaterial.id, fuzzMaterial.wh))
		m, err := RenderValues(v, "dev")
		if err != nil {
			return
		}
		if len(m.Objects) != 18 {
			t.Fatalf("value %q changed the object count to %d", value, len(m.Objects))
		}
		for _, o := range m.Objects {
			if o.Kind.Kind != "Deployment" {
				continue
			}
			spec := o.Content["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
			c := spec["containers"].([]any)[0].(map[string]any)
			tag := value
			if tag == "" {
				tag = "dev"
			}
			if want := value + "/controller:" + tag; c["image"] != want {
				t.Fatalf("image %q, want %q", c["image"], want)
			}
		}
	})
}
