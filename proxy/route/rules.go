package route

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/routematch"
	"github.com/trellis-mesh/trellis/proxy/headermod"
)

// Rules are one control-plane answer's routes for a service, compiled
// once: the route stage selects a Rule per request and picks its backend.
type Rules struct {
	table *routematch.Table // nil: no routes (only a limit)
	rules []Rule
	limit *apiv1.OutboundLimit // nil: none
}

// Limit is the outbound limit of the answer the rules came with (nil:
// none): this proxy's limit on its own requests to the service.
func (rs *Rules) Limit() *apiv1.OutboundLimit {
	if rs == nil {
		return nil
	}
	return rs.limit
}

// withLimit returns rs carrying lim (rs nil: rules of no routes).
func (rs *Rules) withLimit(lim *apiv1.OutboundLimit) *Rules {
	if lim == nil {
		return rs
	}
	if rs == nil {
		rs = &Rules{}
	}
	rs.limit = lim
	return rs
}

// Rule is one compiled apiv1.Route.
type Rule struct {
	Route    *apiv1.Route
	backends []Backend
	total    uint64 // the sum of the backends' weights
	prefixes []string
	req      *headermod.Modifier
	resp     *headermod.Modifier
	Timeout  time.Duration // timeouts.request; 0: the proxy's default
}

// Backend is one weighted backend of a Rule.
type Backend struct {
	Authority string
	cum       uint64 // the weights up to and including this one
	weight    uint64
	req       *headermod.Modifier
	resp      *headermod.Modifier
}

// MaxRoutes bounds the routes of one service's answer.
const MaxRoutes = 1000

// Compile checks and compiles routes (nil or empty: nil Rules, no routes).
func Compile(routes []*apiv1.Route) (*Rules, error) {
	if len(routes) == 0 {
		return nil, nil
	}
	if len(routes) > MaxRoutes {
		return nil, fmt.Errorf("%d routes, more than %d", len(routes), MaxRoutes)
	}
	rs := &Rules{rules: make([]Rule, len(routes))}
	matches := make([][]*apiv1.RouteMatch, len(routes))
	var errs []error
	for i, r := range routes {
		matches[i] = r.GetMatches()
		if err := compileRule(&rs.rules[i], r); err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", r.GetName(), err))
		}
	}
	t, err := routematch.NewTable(matches)
	if err := errors.Join(append(errs, err)...); err != nil {
		return nil, err
	}
	rs.table = t
	return rs, nil
}

func compileRule(ru *Rule, r *apiv1.Route) error {
	ru.Route = r
	var errs []error
	var err error
	ru.req, err = headermod.Compile(r.GetRequestHeaders())
	errs = append(errs, err)
	ru.resp, err = headermod.Compile(r.GetResponseHeaders())
	errs = append(errs, err)
	for _, b := range r.GetBackends() {
		// An empty authority is a backend the controller could not
		// resolve (a missing Service, a refused cross-namespace
		// reference): it keeps its share and that share is answered 500,
		// as the Gateway API says.
		ru.total += uint64(b.GetWeight())
		be := Backend{Authority: b.GetAuthority(), cum: ru.total, weight: uint64(b.GetWeight())}
		be.req, err = headermod.Compile(b.GetRequestHeaders())
		errs = append(errs, err)
		be.resp, err = headermod.Compile(b.GetResponseHeaders())
		errs = append(errs, err)
		ru.backends = append(ru.backends, be)
	}
	for _, m := range r.GetMatches() {
		if p := m.GetPathPrefix(); p != "" {
			ru.prefixes = append(ru.prefixes, strings.TrimRight(p, "/"))
		}
	}
	if t := r.GetTimeout(); t != nil {
		if t.CheckValid() != nil || t.AsDuration() < 0 {
			errs = append(errs, fmt.Errorf("invalid timeout %v", t))
		}
		ru.Timeout = t.AsDuration()
	}
	errs = append(errs, checkRedirect(r.GetRedirect()), checkRewrite(r.GetRewrite()))
	return errors.Join(errs...)
}

func checkRedirect(rd *apiv1.Redirect) error {
	if rd == nil {
		return nil
	}
	switch rd.GetScheme() {
	case "", "http", "https":
	default:
		return fmt.Errorf("redirect scheme %q is not http or https", rd.GetScheme())
	}
	switch rd.GetStatusCode() {
	case 0, http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return fmt.Errorf("redirect status %d is not 301, 302, 303, 307 or 308", rd.GetStatusCode())
	}
	if rd.GetPort() > 65535 {
		return fmt.Errorf("redirect port %d", rd.GetPort())
	}
	return checkTarget("redirect", rd.GetHostname(), rd.GetFullPath(), rd.GetPrefixMatch())
}

func checkRewrite(rw *apiv1.URLRewrite) error {
	if rw == nil {
		return nil
	}
	return checkTarget("rewrite", rw.GetHostname(), rw.GetFullPath(), rw.GetPrefixMatch())
}

// checkTarget refuses a hostname or path that could not be sent as is:
// no control characters, spaces, or authority tricks.
func checkTarget(what, host, full, prefix string) error {
	if host != "" && !isHostname(host) {
		return fmt.Errorf("%s hostname %q is not a DNS name", what, host)
	}
	if full != "" && prefix != "" {
		return fmt.Errorf("%s sets both full_path and prefix_match", what)
	}
	for _, p := range []string{full, prefix} {
		if p == "" {
			continue
		}
		if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?#") || !validPath(p) {
			return fmt.Errorf("%s path %q is not an absolute path", what, p)
		}
	}
	return nil
}

// isHostname: the Gateway API's PreciseHostname, a DNS name without a
// port (letters, digits, '-' and '.').
func isHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func validPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] == 0x7f {
			return false
		}
	}
	return true
}

// Select returns the most specific rule r matches, or nil.
func (rs *Rules) Select(r *http.Request) *Rule {
	if rs == nil || rs.table == nil {
		return nil
	}
	i := rs.table.SelectQuery(r.Method, r.URL.Path, r.URL.RawQuery, r.Header)
	if i < 0 {
		return nil
	}
	return &rs.rules[i]
}

// Len is the number of rules.
func (rs *Rules) Len() int {
	if rs == nil {
		return 0
	}
	return len(rs.rules)
}

// Pick returns the backend for n, a uniform random number: nil for a rule
// without backends (the service itself); ok false when every backend's
// weight is 0 (the Gateway API answers 500).
func (ru *Rule) Pick(n uint64) (b *Backend, ok bool) {
	if len(ru.backends) == 0 {
		return nil, true
	}
	if ru.total == 0 {
		return nil, false
	}
	n %= ru.total
	for i := range ru.backends {
		if n < ru.backends[i].cum {
			return &ru.backends[i], true
		}
	}
	return &ru.backends[len(ru.backends)-1], true // unreachable
}

// matchedPrefix is the longest of the rule's path prefixes that p (clean)
// is under: the part a prefix_match rewrite or redirect replaces.
func (ru *Rule) matchedPrefix(p string) (string, bool) {
	best, found := "", false
	for _, pre := range ru.prefixes {
		if strings.HasPrefix(p, pre) && (len(p) == len(pre) || p[len(pre)] == '/') && (!found || len(pre) > len(best)) {
			best, found = pre, true
		}
	}
	return best, found
}
