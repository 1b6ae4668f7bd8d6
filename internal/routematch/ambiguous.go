package routematch

import (
	"net/http"
	"strings"
)

// SelectStrict is Select for a decision that must hold whatever the app
// makes of the path: escaped is the path as the app receives it (the
// request's escaped path; "" when only the decoded one is known). Apps
// disagree on "%2F" and "%5C" (a separator or not), "%2E%2E" (a dot
// segment or not), ";params" (dropped before dot segments or not: Tomcat
// reads "/admin/..;/public" as "/public", Go's mux as "/admin/..;/public")
// and "\" (a separator on some stacks). A path that reads as another route
// under any of those readings matches no route (-1): a route only adds
// authorizations, so no route is the reading that allows least. A path
// without '%', ';' or '\' has one reading and costs what Select costs.
func (t *Table) SelectStrict(method, decoded, escaped string, h http.Header) int {
	i := t.Select(method, decoded, h)
	if !strings.ContainsAny(escaped, "%;\\") && !strings.ContainsAny(decoded, ";\\") {
		return i
	}
	for _, p := range readings(decoded, escaped) {
		if t.selectClean(method, p, h) != i {
			return -1
		}
	}
	return i
}

// readings are the other ways an app may read the path: params kept,
// encoded separators and dots kept, backslashes as slashes.
func readings(decoded, escaped string) []string {
	rs := []string{cleanKeepParams(decoded)}
	if escaped != "" {
		partial := decodeExcept(escaped)
		rs = append(rs, CleanPath(partial), cleanKeepParams(partial))
	}
	if strings.Contains(decoded, "\\") {
		rs = append(rs, CleanPath(strings.ReplaceAll(decoded, "\\", "/")))
	}
	return rs
}

// selectClean is Select of a path cleaned already.
func (t *Table) selectClean(method, p string, h http.Header) int {
	if i := first(t.exact[p], method, p, h); i >= 0 {
		return i
	}
	if strings.HasPrefix(p, "/") {
		if i := first(t.bySeg[firstSegment(p)], method, p, h); i >= 0 {
			return i
		}
	}
	return first(t.catchAll, method, p, h)
}

// cleanKeepParams resolves dot segments and merges slashes, keeping the
// ";params" of a segment that is a dot segment without them ("..;x" is
// then not a dot segment); other segments drop theirs, as CleanPath does,
// so "/public;jsessionid=1/a" still reads as "/public/a".
func cleanKeepParams(p string) string {
	if p == "" || p[0] != '/' || !strings.Contains(p, ";") {
		return CleanPath(p)
	}
	segs := strings.Split(p, "/")
	for i, s := range segs {
		if j := strings.IndexByte(s, ';'); j >= 0 {
			if s[:j] == "." || s[:j] == ".." {
				segs[i] = strings.ReplaceAll(s, ";", "\x00")
			} else {
				segs[i] = s[:j]
			}
		}
	}
	return strings.ReplaceAll(CleanPath(strings.Join(segs, "/")), "\x00", ";")
}

// decodeExcept percent-decodes p except the escapes apps disagree on
// ("%2F", "%5C", "%2E", "%3B", "%25"), which stay as they are: a segment
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
			if !strings.ContainsRune("/\\.;%", rune(c)) && c >= 0x20 && c != 0x7f {
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
