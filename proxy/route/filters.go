package route

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/routematch"
)

// newPath is the path a full_path or prefix_match filter makes of the
// request's path p (clean), "" when the filter keeps it.
func (ru *Rule) newPath(p, full, prefix string) string {
	switch {
	case full != "":
		return full
	case prefix == "":
		return ""
	}
	pre, ok := ru.matchedPrefix(p)
	if !ok {
		return "" // the Gateway API allows prefix_match only with a prefix match
	}
	np := strings.TrimRight(prefix, "/") + p[len(pre):]
	if np == "" || np[0] != '/' {
		np = "/" + np
	}
	return np
}

// rewrite applies the rule's URL rewrite to r: the Host it is sent with,
// and its path.
func (ru *Rule) rewrite(r *http.Request) {
	rw := ru.Route.GetRewrite()
	if rw == nil {
		return
	}
	if h := rw.GetHostname(); h != "" {
		r.Host = h
	}
	if np := ru.newPath(routematch.CleanPath(r.URL.Path), rw.GetFullPath(), rw.GetPrefixMatch()); np != "" {
		r.URL.Path, r.URL.RawPath = np, ""
	}
}

// location is the Location a redirect rule answers r with; authority is
// the request's host:port.
func (ru *Rule) location(r *http.Request, authority string) string {
	rd := ru.Route.GetRedirect()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		host, port = authority, ""
	}
	if rd.GetScheme() != "" {
		scheme, port = rd.GetScheme(), "" // the scheme's own port
	}
	if rd.GetHostname() != "" {
		host = rd.GetHostname()
	}
	if rd.GetPort() != 0 {
		port = strconv.Itoa(int(rd.GetPort()))
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if port != "" {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	u := url.URL{Scheme: scheme, Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	if np := ru.newPath(routematch.CleanPath(r.URL.Path), rd.GetFullPath(), rd.GetPrefixMatch()); np != "" {
		u.Path, u.RawPath = np, ""
	}
	return u.String()
}

// redirectStatus is the status a redirect answers with (302 by default;
// Compile admits only the Gateway API's 301, 302, 303, 307 and 308).
func redirectStatus(rd *apiv1.Redirect) int {
	if c := rd.GetStatusCode(); c != 0 {
		return int(c)
	}
	return http.StatusFound
}
