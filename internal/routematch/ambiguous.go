package routematch

import (
	"net/http"
	"slices"
	"strings"
)

// MaxReadings bounds the routes SelectStrict returns.
const MaxReadings = 8

// Readings are the routes a request selects under each way an app may
// read its path: Routes[0] is Select's (the decoded, param-dropped,
// dot-resolved path), the rest the other routes (-1: none) other readings
// select, each once.
type Readings struct {
	Routes [MaxReadings]int
	N      int
}

// SelectStrict is Select for a decision that must hold whatever the app
// makes of the path: escaped is the path as the app receives it (the
// request's escaped path; "" when only the decoded one is known). Apps
// disagree on dot segments (resolved, or routed as sent: chi matches
// "/admin/../public" under /admin), "%2F" and "%5C" (a separator or not),
// "%2E%2E" (a dot segment or not), ";params" (dropped before dot segments
// or not: Tomcat reads "/admin/..;/public" as "/public", Go's mux as a path
// under /admin) and "\" (a separator on some stacks). A caller may use a
// route's authorizations only if every route in the result allows it (a
// -1 allows nothing). A clean path has one reading, and costs what Select
// costs.
func (t *Table) SelectStrict(method, decoded, escaped string, h http.Header) Readings {
	r := Readings{N: 1}
	r.Routes[0] = t.Select(method, decoded, h)
	if !strings.ContainsAny(escaped, "%;\\") && !strings.ContainsAny(decoded, ";\\") && !needsClean(decoded) {
		return r
	}
	for _, p := range readings(decoded, escaped) {
		i := t.selectClean(method, p, "", h)
		if !slices.Contains(r.Routes[:r.N], i) && r.N < MaxReadings {
			r.Routes[r.N] = i
			r.N++
		}
	}
	return r
}

// readings are the other ways an app may read the path: as sent (dot
// segments and double slashes kept), params kept, encoded separators,
// dots and delimiters kept, backslashes as slashes.
func readings(decoded, escaped string) []string {
	// As is: clients remove dot segments before sending (RFC 3986 5.2),
	// and routers such as chi match "/admin/../public" under /admin.
	rs := []string{cleanKeepParams(decoded), asSent(decoded)}
	if escaped != "" {
		partial := decodeExcept(escaped)
		rs = append(rs, CleanPath(partial), cleanKeepParams(partial), asSent(partial))
	}
	if strings.Contains(decoded, "\\") {
		rs = append(rs, CleanPath(strings.ReplaceAll(decoded, "\\", "/")))
	}
	return rs
}

// selectClean is Select of a path cleaned already.
func (t *Table) selectClean(method, p, q string, h http.Header) int {
	if i := first(t.exact[p], method, p, q, h); i >= 0 {
		return i
	}
	if strings.HasPrefix(p, "/") {
		if i := first(t.bySeg[firstSegment(p)], method, p, q, h); i >= 0 {
			return i
		}
	}
	return first(t.catchAll, method, p, q, h)
}

// cleanKeepParams resolves dot segments and merges slashes of asSent.
func cleanKeepParams(p string) string {
	c := CleanPath(strings.ReplaceAll(asSent(p), ";", "\x00"))
	return strings.ReplaceAll(c, "\x00", ";")
}

// asSent is p with slashes merged, dot segments kept, and the ";params"
// of other segments dropped, as CleanPath drops them ("/public;jsessionid=1/a"
// is "/public/a"); a segment that is a dot segment without its params
// keeps them ("..;x" is then not a dot segment).
func asSent(p string) string {
	if p == "" || p[0] != '/' {
		return p
	}
	segs := strings.Split(p, "/")
	out := segs[:1]
	for _, s := range segs[1:] {
		if j := strings.IndexByte(s, ';'); j >= 0 && s[:j] != "." && s[:j] != ".." {
			s = s[:j]
		}
		if s != "" {
			out = append(out, s)
		}
	}
	if len(out) == 1 || strings.HasSuffix(p, "/") {
		out = append(out, "")
	}
	return strings.Join(out, "/")
}

// decodeExcept percent-decodes p except the escapes apps disagree on
// ("%2F", "%5C", "%2E", "%3B", "%25", "%23", "%3F"), which stay as they are: a segment
// "%2e%2e" is then not a dot segment, "a%2Fb" one segment. A malformed
// escape stays too.
func decodeExcept(p string) string {
	if !strings.Contains(p, "%") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) && ishex(p[i+1]) && ishex(p[i+2]) {
			c := unhex(p[i+1])<<4 | unhex(p[i+2])
			if !strings.ContainsRune("/\\.;%#?", rune(c)) && c >= 0x20 && c != 0x7f {
				b.WriteByte(c)
				i += 2
				continue
			}
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
