package routematch

import (
	"net/http"
	"strings"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

func q(name, value string, regex bool) *apiv1.RouteMatch_Header {
	return &apiv1.RouteMatch_Header{Name: name, Value: value, Regex: regex}
}

// TestSelectRegexQuery: a regex path ranks below exact and every prefix
// but "/", above the bare "/"; query matches break ties after headers.
func TestSelectRegexQuery(t *testing.T) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{
		{{PathPrefix: "/"}},
		{{PathRegex: "/v[0-9]+/.*"}},
		{{PathPrefix: "/v1"}},
		{{PathRegex: "/v[0-9]+/.*", QueryParams: []*apiv1.RouteMatch_Header{q("canary", "yes", false)}}},
		{{PathPrefix: "/v1", QueryParams: []*apiv1.RouteMatch_Header{q("user", "[a-z]+", true)}}},
		{{PathExact: "/v1/x", QueryParams: []*apiv1.RouteMatch_Header{q("a b", "c&d", false)}}},
		{{PathPrefix: "/", Headers: []*apiv1.RouteMatch_Header{q("h", "1", false)}}},
		{{PathPrefix: "/", QueryParams: []*apiv1.RouteMatch_Header{q("h", "1", false), q("i", "1", false)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h1 := http.Header{"H": {"1"}}
	for _, tt := range []struct {
		path, query string
		h           http.Header
		want        int
	}{
		{"/z", "", nil, 0},
		{"/v2/a", "", nil, 1},
		{"/v2", "", nil, 0},        // the regex needs a second segment
		{"/v2/a/../b", "", nil, 1}, // cleaned first
		{"/v1/a", "", nil, 2},
		{"/v2/a", "canary=yes", nil, 3},
		{"/v2/a", "canary=no&canary=yes", nil, 1}, // the first value counts
		{"/v1/a", "user=bob", nil, 4},
		{"/v1/a", "user=Bob", nil, 2},
		{"/v1/x", "a+b=c%26d", nil, 5},
		{"/v1/x", "a%20b=c%26d", nil, 5},
		{"/v1/x", "a b=c", nil, 2},
		{"/z", "h=1&i=1", h1, 6}, // headers before query params
		{"/z", "h=1&i=1", nil, 7},
		{"/z", "i=1&h=1", nil, 7},
		{"/z", "h=1", nil, 0},
		{"/z", "h=%zz&i=1", nil, 0}, // a bad escape is kept as sent
	} {
		if got := tbl.SelectQuery("GET", tt.path, tt.query, tt.h); got != tt.want {
			t.Errorf("SelectQuery(%s ?%s %v) = %d, want %d", tt.path, tt.query, tt.h, got, tt.want)
		}
	}
	if got := tbl.Select("GET", "/v2/a", nil); got != 1 {
		t.Errorf("Select without query: %d, want 1", got)
	}
}

func TestCompileRefusesRegexQuery(t *testing.T) {
	for name, m := range map[string]*apiv1.RouteMatch{
		"bad regex":        {PathRegex: "(["},
		"long regex":       {PathRegex: strings.Repeat("a", MaxRegex+1)},
		"regex and exact":  {PathRegex: "/a", PathExact: "/a"},
		"regex and prefix": {PathRegex: "/a", PathPrefix: "/a"},
		"query no name":    {QueryParams: []*apiv1.RouteMatch_Header{q("", "x", false)}},
		"query bad regex":  {QueryParams: []*apiv1.RouteMatch_Header{q("a", "(", true)}},
	} {
		if _, err := Compile(m); err == nil {
			t.Errorf("%s: compiled", name)
		}
	}
}

// TestSelectAllocs: a clean path with regex, header and query matches
// costs no allocation.
func TestSelectAllocs(t *testing.T) {
	tbl, err := NewTable([][]*apiv1.RouteMatch{
		{{PathRegex: "/v[0-9]+/.*", QueryParams: []*apiv1.RouteMatch_Header{q("a", "b.*", true)}}},
		{{PathPrefix: "/v1", Headers: []*apiv1.RouteMatch_Header{q("x", "1", false)}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{"X": {"1"}}
	if n := testing.AllocsPerRun(100, func() { tbl.SelectQuery("GET", "/v2/items", "z=1&a=bc", h) }); n != 0 {
		t.Errorf("%v allocations per SelectQuery", n)
	}
}

// FuzzSelectRegexQuery: the indexed SelectQuery picks what a naive scan
// of every match picks, with regex paths and query matches in the mix.
func FuzzSelectRegexQuery(f *testing.F) {
	f.Add("/a.*", "/a", "k", "v.*", "/a/b", "k=vv&x=1")
	f.Add("/[", "/", "", "", "/", "")
	f.Add(".*", "/x/y", "k", "(", "/x/y/z", "k=%zz")
	f.Fuzz(func(t *testing.T, re, prefix, qname, qre, path, query string) {
		routes := [][]*apiv1.RouteMatch{
			{{PathRegex: re}},
			{{PathPrefix: prefix, QueryParams: []*apiv1.RouteMatch_Header{q(qname, qre, true)}}},
			{{PathRegex: re, QueryParams: []*apiv1.RouteMatch_Header{q(qname, qre, false)}}},
			{{PathExact: prefix}},
			nil,
		}
		tbl, err := NewTable(routes)
		if err != nil {
			return
		}
		got := tbl.SelectQuery("GET", path, query, nil)
		if want := naiveSelectQuery(routes, "GET", path, query, nil); got != want {
			t.Fatalf("SelectQuery(%q ?%q) = %d, naive %d", path, query, got, want)
		}
	})
}
