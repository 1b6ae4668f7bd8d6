package headermod

import (
	"net/http"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func hdrs(kv ...string) []*apiv1.HeaderModifier_Header {
	var out []*apiv1.HeaderModifier_Header
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &apiv1.HeaderModifier_Header{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func TestApply(t *testing.T) {
	m, err := Compile(&apiv1.HeaderModifier{
		Set:    hdrs("x-env", "canary", "accept", "text/plain"),
		Add:    hdrs("x-tag", "b", "X-Env", "second"),
		Remove: []string{"x-secret", "X-Absent"},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X-Env": {"prod", "old"}, "X-Tag": {"a"}, "X-Secret": {"s"}, "Keep": {"k"}}
	m.Apply(h)
	want := http.Header{"X-Env": {"canary", "second"}, "Accept": {"text/plain"}, "X-Tag": {"a", "b"}, "Keep": {"k"}}
	if !reflect.DeepEqual(h, want) {
		t.Errorf("got %v, want %v", h, want)
	}
	var none *Modifier
	none.Apply(h) // nil changes nothing
	if !reflect.DeepEqual(h, want) {
		t.Errorf("nil modifier changed %v", h)
	}
}

func TestCompileRefuses(t *testing.T) {
	for name, m := range map[string]*apiv1.HeaderModifier{
		"CRLF in value":   {Set: hdrs("x", "a\r\nInjected: 1")},
		"LF in value":     {Add: hdrs("x", "a\nb")},
		"NUL in value":    {Add: hdrs("x", "a\x00")},
		"bad name":        {Set: hdrs("x y", "1")},
		"empty name":      {Remove: []string{""}},
		"colon name":      {Set: hdrs(":path", "/admin")},
		"mesh set":        {Set: hdrs("trellis-orig-proto", "HTTP/1.0")},
		"mesh remove":     {Remove: []string{"Trellis-Target-Port"}},
		"mesh fault":      {Add: hdrs("TRELLIS-FAULT", "x")},
		"host":            {Set: hdrs("host", "evil")},
		"content-length":  {Set: hdrs("content-length", "0")},
		"transfer-coding": {Remove: []string{"transfer-encoding"}},
		"long value":      {Set: hdrs("x", strings.Repeat("a", MaxValue+1))},
		"too many":        {Remove: strings.Fields(strings.Repeat("x ", MaxEntries+1))},
	} {
		if _, err := Compile(m); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
	if m, err := Compile(&apiv1.HeaderModifier{}); m != nil || err != nil {
		t.Errorf("empty modifier: %v, %v", m, err)
	}
}

// FuzzApply: whatever a route says, a compiled modifier never writes a
// name or value HTTP cannot carry, nor touches trellis-* or Host.
func FuzzApply(f *testing.F) {
	f.Add("x-a", "v", "x-b", "w\r\nx: y", "x-c")
	f.Add("trellis-fault", "x", "Host", "h", "trellis-orig-proto")
	f.Fuzz(func(t *testing.T, setName, setValue, addName, addValue, remove string) {
		m, err := Compile(&apiv1.HeaderModifier{
			Set: hdrs(setName, setValue), Add: hdrs(addName, addValue), Remove: []string{remove},
		})
		if err != nil {
			return
		}
		h := http.Header{"Trellis-Orig-Proto": {"HTTP/1.1"}, "Host": {"a"}, "X-Keep": {"1"}}
		m.Apply(h)
		if h.Get("Trellis-Orig-Proto") != "HTTP/1.1" || h.Get("Host") != "a" {
			t.Fatalf("reserved header changed: %v", h)
		}
		for k, vs := range h {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("invalid name %q", k)
			}
			for _, v := range vs {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("invalid value %q", v)
				}
			}
		}
	})
}
