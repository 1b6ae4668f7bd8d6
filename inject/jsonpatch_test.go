package inject

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// applyPatch applies ops with an independent RFC 6902 implementation.
func applyPatch(t testing.TB, doc []byte, ops []PatchOp) []byte {
	t.Helper()
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("decode patch %s: %v", raw, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s to %s: %v", raw, doc, err)
	}
	return out
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name, from, to string
		want           string // the exact patch, when it matters
	}{
		{name: "equal", from: `{"a":1,"b":[1,2]}`, to: `{"a":1,"b":[1,2]}`, want: `null`},
		{name: "add member with slash and tilde", from: `{"m":{}}`, to: `{"m":{"trellis.io/inject":"x","a~b":1}}`,
			want: `[{"op":"add","path":"/m/a~0b","value":1},{"op":"add","path":"/m/trellis.io~1inject","value":"x"}]`},
		{name: "remove member", from: `{"a":1,"b":2}`, to: `{"a":1}`, want: `[{"op":"remove","path":"/b"}]`},
		{name: "replace scalar", from: `{"a":1}`, to: `{"a":"1"}`, want: `[{"op":"replace","path":"/a","value":"1"}]`},
		{name: "null value kept", from: `{"a":1}`, to: `{"a":null}`, want: `[{"op":"replace","path":"/a","value":null}]`},
		{name: "add null member", from: `{}`, to: `{"a":null}`, want: `[{"op":"add","path":"/a","value":null}]`},
		{name: "insert at front keeps the rest", from: `{"c":[{"n":"app","x":1}]}`, to: `{"c":[{"n":"proxy"},{"n":"app","x":1}]}`,
			want: `[{"op":"add","path":"/c/0","value":{"n":"proxy"}}]`},
		{name: "insert after first", from: `{"c":[1,3]}`, to: `{"c":[1,2,3]}`, want: `[{"op":"add","path":"/c/1","value":2}]`},
		{name: "append", from: `{"c":[1]}`, to: `{"c":[1,2,3]}`, want: `[{"op":"add","path":"/c/1","value":2},{"op":"add","path":"/c/2","value":3}]`},
		{name: "one element edited in place", from: `{"c":[{"a":1},{"b":1}]}`, to: `{"c":[{"a":1},{"b":2}]}`,
			want: `[{"op":"replace","path":"/c/1/b","value":2}]`},
		{name: "removals and insertions", from: `{"c":[1,2,3,4,5]}`, to: `{"c":[0,2,9,4,6,7]}`},
		{name: "array emptied", from: `{"c":[1,2]}`, to: `{"c":[]}`},
		{name: "type change", from: `{"c":[1,2]}`, to: `{"c":{"0":1}}`, want: `[{"op":"replace","path":"/c","value":{"0":1}}]`},
		{name: "nested", from: `{"spec":{"containers":[{"name":"a"}],"volumes":[]}}`, to: `{"spec":{"containers":[{"name":"p"},{"name":"a"}],"volumes":[{"name":"v"}]},"x":true}`},
		{name: "big numbers exact", from: `{"n":12345678901234567890}`, to: `{"n":12345678901234567891}`, want: `[{"op":"replace","path":"/n","value":12345678901234567891}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := Diff([]byte(tt.from), []byte(tt.to))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(ops)
			if tt.want != "" && string(got) != tt.want {
				t.Errorf("patch\n got %s\nwant %s", got, tt.want)
			}
			if len(ops) == 0 {
				return
			}
			if out := applyPatch(t, []byte(tt.from), ops); !jsonpatch.Equal(out, []byte(tt.to)) {
				t.Errorf("applied: %s, want %s", out, tt.to)
			}
		})
	}
}

func TestDiffBadInput(t *testing.T) {
	for _, tc := range [][2]string{{`{`, `{}`}, {`{}`, `{} x`}, {``, `{}`}} {
		if _, err := Diff([]byte(tc[0]), []byte(tc[1])); err == nil {
			t.Errorf("Diff(%q, %q): no error", tc[0], tc[1])
		}
	}
}

func TestDiffLargeArrayReplaced(t *testing.T) {
	var a, b strings.Builder
	a.WriteString(`{"x":[`)
	b.WriteString(`{"x":[`)
	for i := range 1100 {
		if i > 0 {
			a.WriteByte(',')
			b.WriteByte(',')
		}
		a.WriteString(`1`)
		b.WriteString(`2`)
	}
	a.WriteString(`]}`)
	b.WriteString(`,3]}`)
	ops, err := Diff([]byte(a.String()), []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Op != "replace" || ops[0].Path != "/x" {
		t.Fatalf("ops = %d, first %+v", len(ops), ops[0])
	}
	if out := applyPatch(t, []byte(a.String()), ops); !jsonpatch.Equal(out, []byte(b.String())) {
		t.Error("applied patch differs")
	}
}

func TestPatchForPartialObject(t *testing.T) {
	// A pod with only metadata (no "spec" at all): the typed diff's
	// paths do not exist in it, so changed members are replaced whole.
	raw := []byte(`{"metadata":{"name":"p","annotations":{"trellis.io/inject":"enabled"},"futureMeta":1}}`)
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	res, err := New(Config{}).Mutate(&pod, "shop", nil)
	if err != nil || !res.Injected {
		t.Fatal(err)
	}
	patch, patched, err := PatchFor(raw, &pod, res.Pod)
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(applyPatch(t, raw, decodeOps(t, patch)), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Spec.InitContainers) != 2 || got.Annotations[k8slabels.AnnotationProxyVersion] == "" {
		t.Errorf("patched pod %+v", got)
	}
	if !bytes.Contains(patched, []byte(`"spec"`)) {
		t.Errorf("patched %s", patched)
	}

	// The normal case keeps unknown fields and touches only what changed.
	raw = []byte(`{"metadata":{"name":"p","futureMeta":1},"spec":{"containers":[{"name":"app","futureField":2}]}}`)
	pod = corev1.Pod{}
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	res, err = New(Config{}).Mutate(&pod, "shop", map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationSidecarMode: k8slabels.SidecarClassic})
	if err != nil || !res.Injected {
		t.Fatal(err)
	}
	patch, patched, err = PatchFor(raw, &pod, res.Pod)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(patched, []byte(`"futureMeta":1`)) || !bytes.Contains(patched, []byte(`"futureField":2`)) {
		t.Errorf("unknown fields lost: %s", patched)
	}
	if bytes.Contains(patch, []byte(`"replace"`)) {
		t.Errorf("patch replaces instead of adding: %s", patch)
	}
}

func decodeOps(t *testing.T, patch []byte) []PatchOp {
	t.Helper()
	var raw []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(patch, &raw); err != nil {
		t.Fatal(err)
	}
	ops := make([]PatchOp, len(raw))
	for i, r := range raw {
		ops[i] = PatchOp{Op: r.Op, Path: r.Path, Value: r.Value}
	}
	return ops
}
