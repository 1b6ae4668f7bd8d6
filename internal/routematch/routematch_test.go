package routematch

import (
	"net/http"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/": "/", "/a/b": "/a/b", "/a/b/": "/a/b/", "/a/../b": "/b", "/a/./b": "/a/b",
		"//a//b": "/a/b", "/a/..": "/", "/../../etc": "/etc", "/a/b/.": "/a/b", "*": "*", "/a/b/../": "/a/",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSelect: precedence, ties to the earlier route, and a route without
// matches matching everything with the least precedence.
func TestSelect(t *testing.T) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{
		nil,
		{{PathPrefix: "/"}},
		{{PathPrefix: "/a"}, {PathExact: "/x"}},
		{{PathPrefix: "/a/b"}},
		{{PathPrefix: "/a", Method: "PUT"}},
		{{PathPrefix: "/a", Method: "PUT", Headers: []*apiv1.RouteMatch_Header{{Name: "h", Value: "1"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h1 := http.Header{"H": {"1"}}
	for _, tt := range []struct {
		method, path string
		h            http.Header
		want         int
	}{
		{"GET", "/z", nil, 0},
		{"GET", "/a", nil, 2},
		{"GET", "/x", nil, 2},
		{"GET", "/a/b/c", nil, 3},
		{"PUT", "/a/c", nil, 4},
		{"PUT", "/a/c", h1, 5},
		{"PUT", "/a/b", h1, 3},
	} {
		if got := tbl.Select(tt.method, tt.path, tt.h); got != tt.want {
			t.Errorf("Select(%s %s %v) = %d, want %d", tt.method, tt.path, tt.h, got, tt.want)
		}
	}
	empty, _ := NewTable(nil)
	if got := empty.Select("GET", "/", nil); got != -1 {
		t.Errorf("empty table selected %d", got)
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/a/../b", "//", "/./", "x", "/a/b/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		c := CleanPath(p)
		if len(p) > 0 && p[0] == '/' && CleanPath(c) != c {
			t.Fatalf("CleanPath(%q) = %q is not clean", p, c)
		}
	})
}
