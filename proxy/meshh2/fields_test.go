package meshh2

import (
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestFieldsToHeader: canonical keys, repeated keys and joined cookies,
// and values sharing a backing array stay apart when one key grows.
func TestFieldsToHeader(t *testing.T) {
	cases := []struct {
		name   string
		fields []hpack.HeaderField
		want   http.Header
	}{
		{"empty", nil, http.Header{}},
		{"canonical keys", []hpack.HeaderField{{Name: "content-type", Value: "a"}, {Name: "x-my-field", Value: "b"}},
			http.Header{"Content-Type": {"a"}, "X-My-Field": {"b"}}},
		{"repeated key between others", []hpack.HeaderField{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "a", Value: "3"}},
			http.Header{"A": {"1", "3"}, "B": {"2"}}},
		{"cookies joined", []hpack.HeaderField{{Name: "cookie", Value: "x=1"}, {Name: "b", Value: "2"}, {Name: "cookie", Value: "y=2"}},
			http.Header{"Cookie": {"x=1; y=2"}, "B": {"2"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c canon
			h := c.fieldsToHeader(tc.fields)
			if !reflect.DeepEqual(h, tc.want) {
				t.Fatalf("header %v, want %v", h, tc.want)
			}
			for k := range h {
				before := h.Clone()
				h[k] = append(h[k], "extra")
				for k2, vv := range before {
					if k2 != k && !reflect.DeepEqual(h[k2], vv) {
						t.Fatalf("append to %s changed %s: %v, was %v", k, k2, h[k2], vv)
					}
				}
			}
		})
	}
}
