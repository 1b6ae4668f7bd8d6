// Package routematch selects the route a request matches among compiled
// apiv1.RouteMatch lists, with Gateway API precedence: an exact path beats
// a prefix, a longer prefix a shorter one, a regular expression on the
// path the bare "/" prefix, then a method, then more header matches, then
// more query parameter matches; a tie goes to the earlier route. It is pure (no proxy imports):
// the inbound authorization (internal/authz) and the outbound routes use
// it alike. Matching allocates nothing for a clean path.
package routematch

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// MaxRegex bounds a header, query or path regular expression: a
// control-plane answer is trusted, but not to make every request pay for a
// huge automaton.
const MaxRegex = 1024

// Match is one compiled apiv1.RouteMatch: every field set must match.
type Match struct {
	exact   string         // "" unless an exact path
	prefix  string         // without a trailing slash; "" matches every path
	pathRE  *regexp.Regexp // full match of the clean path when set
	method  string
	headers []header
	query   []header // name as sent (case-sensitive), first value
}

type header struct {
	name  string // canonical MIME form, so that lookups do not allocate
	value string
	re    *regexp.Regexp // full match of the value when set
}

// Specificity orders matches by Gateway API precedence.
type Specificity struct {
	Exact     bool
	PrefixLen int
	Regex     bool // a regex path: below any prefix but the bare "/"
	Method    bool
	Headers   int
	Query     int
}

// Beats reports whether s is strictly more specific than o.
func (s Specificity) Beats(o Specificity) bool {
	switch {
	case s.Exact != o.Exact:
		return s.Exact
	case s.PrefixLen != o.PrefixLen:
		return s.PrefixLen > o.PrefixLen
	case s.Regex != o.Regex:
		return s.Regex
	case s.Method != o.Method:
		return s.Method
	case s.Headers != o.Headers:
		return s.Headers > o.Headers
	}
	return s.Query > o.Query
}

// Compile checks and compiles m; nil matches every request.
func Compile(m *apiv1.RouteMatch) (Match, error) {
	var c Match
	if m == nil {
		return c, nil
	}
	if m.GetPathExact() != "" && m.GetPathPrefix() != "" {
		return c, fmt.Errorf("both path_exact %q and path_prefix %q set", m.GetPathExact(), m.GetPathPrefix())
	}
	if m.GetPathRegex() != "" && (m.GetPathExact() != "" || m.GetPathPrefix() != "") {
		return c, fmt.Errorf("both path_regex %q and another path match set", m.GetPathRegex())
	}
	if p := m.GetPathExact(); p != "" {
		if err := checkPath(p); err != nil {
			return c, fmt.Errorf("path_exact: %w", err)
		}
		c.exact = p
	}
	if p := m.GetPathPrefix(); p != "" {
		if err := checkPath(p); err != nil {
			return c, fmt.Errorf("path_prefix: %w", err)
		}
		c.prefix = strings.TrimRight(p, "/")
	}
	if p := m.GetPathRegex(); p != "" {
		re, err := compileRegex(p)
		if err != nil {
			return c, fmt.Errorf("path_regex: %w", err)
		}
		c.pathRE = re
	}
	if meth := m.GetMethod(); meth != "" {
		if !isToken(meth) {
			return c, fmt.Errorf("method %q: not an HTTP token", meth)
		}
		c.method = meth
	}
	for _, h := range m.GetHeaders() {
		hc, err := compileHeader(h)
		if err != nil {
			return c, err
		}
		c.headers = append(c.headers, hc)
	}
	for _, q := range m.GetQueryParams() {
		qc, err := compileQuery(q)
		if err != nil {
			return c, err
		}
		c.query = append(c.query, qc)
	}
	return c, nil
}

// compileRegex compiles a bounded RE2 expression anchored at both ends.
func compileRegex(expr string) (*regexp.Regexp, error) {
	if len(expr) > MaxRegex {
		return nil, fmt.Errorf("regex longer than %d bytes", MaxRegex)
	}
	return regexp.Compile("^(?:" + expr + ")$")
}

func compileQuery(q *apiv1.RouteMatch_Header) (header, error) {
	if q.GetName() == "" || len(q.GetName()) > MaxRegex {
		return header{}, fmt.Errorf("query parameter name %q: empty or too long", q.GetName())
	}
	hc := header{name: q.GetName(), value: q.GetValue()}
	if q.GetRegex() {
		re, err := compileRegex(q.GetValue())
		if err != nil {
			return header{}, fmt.Errorf("query parameter %q: %w", q.GetName(), err)
		}
		hc.re = re
	}
	return hc, nil
}

func compileHeader(h *apiv1.RouteMatch_Header) (header, error) {
	if !isToken(h.GetName()) {
		return header{}, fmt.Errorf("header name %q: not an HTTP token", h.GetName())
	}
	hc := header{name: textproto.CanonicalMIMEHeaderKey(h.GetName()), value: h.GetValue()}
	if h.GetRegex() {
		re, err := compileRegex(h.GetValue())
		if err != nil {
			return header{}, fmt.Errorf("header %q: %w", h.GetName(), err)
		}
		hc.re = re
	}
	return hc, nil
}

func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q does not start with /", p)
	}
	for i := 0; i < len(p); i++ {
		if p[i] < 0x21 || p[i] == 0x7f {
			return fmt.Errorf("%q has a space or control character", p)
		}
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

// Specificity is m's precedence.
func (m *Match) Specificity() Specificity {
	s := Specificity{Exact: m.exact != "", Regex: m.pathRE != nil, Method: m.method != "",
		Headers: len(m.headers), Query: len(m.query)}
	if !s.Exact {
		// "/" and "" both match everything; "/a" beats them.
		s.PrefixLen = len(m.prefix)
	}
	return s
}

// Matches reports whether a request without a query matches m. path must
// be clean (see CleanPath).
func (m *Match) Matches(method, path string, h http.Header) bool {
	return m.MatchesQuery(method, path, "", h)
}

// MatchesQuery reports whether a request matches m; rawQuery is the
// request's query as sent (URL.RawQuery). path must be clean.
func (m *Match) MatchesQuery(method, path, rawQuery string, h http.Header) bool {
	if m.exact != "" && path != m.exact {
		return false
	}
	if m.pathRE != nil && !m.pathRE.MatchString(path) {
		return false
	}
	if m.prefix != "" && !(strings.HasPrefix(path, m.prefix) &&
		(len(path) == len(m.prefix) || path[len(m.prefix)] == '/')) {
		return false
	}
	if m.method != "" && method != m.method {
		return false
	}
	for i := range m.headers {
		hm := &m.headers[i]
		v := h[hm.name]
		if len(v) == 0 {
			return false
		}
		// Every value: apps differ on which of repeated fields they
		// read (first, last, joined), and a route only adds
		// authorizations.
		for _, x := range v {
			if !hm.matches(x) {
				return false
			}
		}
	}
	for i := range m.query {
		v, ok := queryValue(rawQuery, m.query[i].name)
		if !ok || !m.query[i].matches(v) {
			return false
		}
	}
	return true
}

func (hm *header) matches(v string) bool {
	if hm.re != nil {
		return hm.re.MatchString(v)
	}
	return v == hm.value
}

// Table is a list of routes, each a list of matches (none: the route
// matches every request), indexed so that Select looks only at the
// matches that can apply: exact paths by path, prefixes by their first
// path segment (a prefix matches whole segments), and the catch-alls.
// Each bucket is sorted by precedence, so the first match found wins.
type Table struct {
	n        int
	exact    map[string][]entry
	bySeg    map[string][]entry
	catchAll []entry
}

type entry struct {
	m     Match
	spec  Specificity
	route int
}

// ErrTooMany refuses a table beyond what a request should pay to scan.
var ErrTooMany = errors.New("too many route matches")

// MaxMatches bounds the matches of a Table.
const MaxMatches = 10000

// NewTable compiles routes; the error names the route and match at fault.
func NewTable(routes [][]*apiv1.RouteMatch) (*Table, error) {
	t := &Table{n: len(routes), exact: map[string][]entry{}, bySeg: map[string][]entry{}}
	n := 0
	for i, ms := range routes {
		n += len(ms)
		if n > MaxMatches {
			return nil, fmt.Errorf("%w: more than %d", ErrTooMany, MaxMatches)
		}
		if len(ms) == 0 {
			t.catchAll = append(t.catchAll, entry{route: i})
		}
		for j, m := range ms {
			c, err := Compile(m)
			if err != nil {
				return nil, fmt.Errorf("route %d, match %d: %w", i, j, err)
			}
			e := entry{m: c, spec: c.Specificity(), route: i}
			switch {
			case c.exact != "":
				t.exact[c.exact] = append(t.exact[c.exact], e)
			case c.prefix != "":
				seg := firstSegment(c.prefix)
				t.bySeg[seg] = append(t.bySeg[seg], e)
			default:
				t.catchAll = append(t.catchAll, e)
			}
		}
	}
	for _, b := range t.exact {
		sortBucket(b)
	}
	for _, b := range t.bySeg {
		sortBucket(b)
	}
	sortBucket(t.catchAll)
	return t, nil
}

// sortBucket orders by precedence, the earlier route first on a tie.
func sortBucket(b []entry) {
	slices.SortStableFunc(b, func(x, y entry) int {
		switch {
		case x.spec.Beats(y.spec):
			return -1
		case y.spec.Beats(x.spec):
			return 1
		}
		return x.route - y.route
	})
}

// firstSegment is the first segment of a path ("/a/b" -> "a").
func firstSegment(p string) string {
	p = strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return p
}

// Len is the number of routes.
func (t *Table) Len() int { return t.n }

// Select returns the index of the most specific route matching a request
// without a query, or -1. path is cleaned first (CleanPath).
func (t *Table) Select(method, rawPath string, h http.Header) int {
	return t.selectClean(method, CleanPath(rawPath), "", h)
}

// SelectQuery is Select for a request whose query is rawQuery.
func (t *Table) SelectQuery(method, rawPath, rawQuery string, h http.Header) int {
	return t.selectClean(method, CleanPath(rawPath), rawQuery, h)
}

func first(b []entry, method, p, q string, h http.Header) int {
	for i := range b {
		if b[i].m.MatchesQuery(method, p, q, h) {
			return b[i].route
		}
	}
	return -1
}

// CleanPath is the path a request is matched on: path parameters
// (";jsessionid=...") dropped, dot segments resolved and slashes merged, as
// many apps do before routing, so that "/public/../admin" and "/admin;x"
// are matched as "/admin". It allocates only when the path is not clean
// already.
func CleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		return p // "*" (OPTIONS) or an authority form: no route path.
	}
	if strings.IndexByte(p, ';') >= 0 {
		p = dropParams(p)
	}
	if !needsClean(p) {
		return p
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// dropParams removes each segment's ";params".
func dropParams(p string) string {
	var b strings.Builder
	for len(p) > 0 {
		seg, rest, more := strings.Cut(p, "/")
		if i := strings.IndexByte(seg, ';'); i >= 0 {
			seg = seg[:i]
		}
		b.WriteString(seg)
		if more {
			b.WriteByte('/')
		}
		p = rest
	}
	return b.String()
}

func needsClean(p string) bool {
	return strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
		strings.HasSuffix(p, "/.") || strings.HasSuffix(p, "/..")
}

// queryValue is the first value of the query parameter name in rawQuery,
// decoded; it allocates only for a pair with escapes.
func queryValue(rawQuery, name string) (string, bool) {
	for rawQuery != "" {
		var pair string
		pair, rawQuery, _ = strings.Cut(rawQuery, "&")
		k, v, _ := strings.Cut(pair, "=")
		if unescape(k) != name {
			continue
		}
		return unescape(v), true
	}
	return "", false
}

// unescape decodes a query component; one that does not decode is kept as
// sent (it then matches only a route naming it so).
func unescape(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	u, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return u
}
