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
		"/admin;x": "/admin", "/a;p=1/b;q": "/a/b", "/public;x/../admin": "/admin", "/;/": "/", "/a/;": "/a/",
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

// naiveSelect is the definition Select's index must agree with: every
// match of every route, the most specific, the earlier on a tie.
func naiveSelect(routes [][]*apiv1.RouteMatch, method, path string, h http.Header) int {
	return naiveSelectQuery(routes, method, path, "", h)
}

// naiveSelectQuery is naiveSelect for a request with a query.
func naiveSelectQuery(routes [][]*apiv1.RouteMatch, method, path, query string, h http.Header) int {
	p := CleanPath(path)
	best, bestSpec := -1, Specificity{}
	for i, ms := range routes {
		if len(ms) == 0 {
			ms = []*apiv1.RouteMatch{nil}
		}
		for _, rm := range ms {
			m, _ := Compile(rm)
			if m.MatchesQuery(method, p, query, h) && (best < 0 || m.Specificity().Beats(bestSpec)) {
				best, bestSpec = i, m.Specificity()
			}
		}
	}
	return best
}

// FuzzSelectIndex: the indexed Select picks what the naive scan picks.
func FuzzSelectIndex(f *testing.F) {
	f.Add("/a", "/a/b", "GET", "/a/b/c", "GET", true)
	f.Add("/", "/x", "", "/x", "PUT", false)
	f.Fuzz(func(t *testing.T, p1, p2, m2, path, method string, exact bool) {
		routes := [][]*apiv1.RouteMatch{
			{{PathPrefix: p1}},
			{{PathPrefix: p2, Method: m2}, {PathExact: p1}},
			nil,
			{{PathPrefix: p1, Method: method}},
		}
		if exact {
			routes = append(routes, []*apiv1.RouteMatch{{PathExact: p2, Method: m2}})
		}
		tbl, err := NewTable(routes)
		if err != nil {
			return
		}
		if got, want := tbl.Select(method, path, nil), naiveSelect(routes, method, path, nil); got != want {
			t.Fatalf("Select(%q %q) = %d, naive %d", method, path, got, want)
		}
	})
}
