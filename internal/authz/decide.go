package authz

import (
	"net/http"
	"net/netip"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/routematch"
)

// Reasons a call is denied (Decision.Reason, the reason label of
// trellis_inbound_authz_deny_total).
const (
	// ReasonUnauthorized: no authorization allows the caller and access
	// is deny (or audit: the would-be denial).
	ReasonUnauthorized = "unauthorized"
	// ReasonUnauthenticated: no authorization allows the caller, which
	// has no mesh identity, and access requires one.
	ReasonUnauthenticated = "unauthenticated"
	// ReasonForeignTrustDomain: access is cluster-authenticated and the
	// caller's identity is of another trust domain.
	ReasonForeignTrustDomain = "foreign_trust_domain"
	// ReasonNotHTTP: a stream that is not HTTP on a port whose requests
	// are rate or concurrency limited (it would escape the limit).
	ReasonNotHTTP = "not_http"
)

// Decision is the answer for one call.
type Decision struct {
	// Allowed: forward the call. Audited: allowed only because access is
	// audit (Reason and Msg say what would have denied it).
	Allowed, Audited bool
	Server           string // the policy's metric label
	Route            string // the matched route's name, "" for none
	// Authz names what allowed the call: an authorization's name, or
	// "access:<access>" when the access policy let the caller in.
	Authz  string
	Reason string // why it is (or would be) denied
	Msg    string // one line for the caller and the log
}

// Decide decides in against p. It allocates nothing for an allowed call
// with a clean path.
func (p *Policy) Decide(in Input) Decision {
	d := Decision{Server: p.server}
	id := ""
	if in.TLS {
		id = in.Identity
	}
	ip := in.ClientIP.Unmap()
	if in.Conn && p.httpOnly {
		d.Reason = ReasonNotHTTP
		d.Msg = "denied: server " + quote(d.Server) + " limits HTTP requests (RateLimit), and this stream is not HTTP (or sent nothing in time to tell)"
		return d
	}
	var rs routematch.Readings
	// CONNECT names an authority, not a path: no route is its.
	if !in.Conn && p.table != nil && in.Method != http.MethodConnect {
		rs = p.table.SelectStrict(in.Method, in.Path, in.RawPath, in.Header)
		if rs.Routes[0] >= 0 {
			d.Route = p.routes[rs.Routes[0]].name
		}
	}
	if a := p.authzs.allowing(id, ip); a != nil {
		d.Allowed, d.Authz = true, a.name
		return d
	}
	if a := p.routesAllowing(rs, id, ip); a != nil {
		d.Allowed, d.Authz = true, a.name
		return d
	}
	return p.byAccess(d, id)
}

// routesAllowing returns the authorization of the request's route that
// allows the caller, provided the route of every other reading of the
// path allows it too (see routematch.Table.SelectStrict); else nil.
func (p *Policy) routesAllowing(rs routematch.Readings, id string, ip netip.Addr) *authorization {
	var first *authorization
	for _, i := range rs.Routes[:rs.N] {
		if i < 0 {
			return nil
		}
		a := p.routes[i].authzs.allowing(id, ip)
		if a == nil {
			return nil
		}
		if first == nil {
			first = a
		}
	}
	return first
}

// byAccess is the decision when no authorization allows the caller.
func (p *Policy) byAccess(d Decision, id string) Decision {
	switch p.access {
	case apiv1.AccessPolicy_ALL_UNAUTHENTICATED:
		d.Allowed, d.Authz = true, p.accessAuthz
		return d
	case apiv1.AccessPolicy_ALL_AUTHENTICATED:
		if id != "" {
			d.Allowed, d.Authz = true, p.accessAuthz
			return d
		}
		d.Reason = ReasonUnauthenticated
	case apiv1.AccessPolicy_CLUSTER_AUTHENTICATED:
		switch {
		case id == "":
			d.Reason = ReasonUnauthenticated
		case strings.HasPrefix(id, p.trustPrefix):
			d.Allowed, d.Authz = true, p.accessAuthz
			return d
		default:
			d.Reason = ReasonForeignTrustDomain
		}
	case apiv1.AccessPolicy_AUDIT:
		d.Allowed, d.Audited, d.Reason = true, true, ReasonUnauthorized
	default:
		d.Reason = ReasonUnauthorized
	}
	d.Msg = p.message(d, id)
	return d
}

// message says why a call is (or would be) denied, naming the server and
// route, the caller and the access policy.
func (p *Policy) message(d Decision, id string) string {
	var b strings.Builder
	b.WriteString("denied by authorization policy: server ")
	b.WriteString(quote(d.Server))
	if d.Route != "" {
		b.WriteString(", route ")
		b.WriteString(quote(d.Route))
	}
	b.WriteString(": ")
	switch d.Reason {
	case ReasonUnauthenticated:
		b.WriteString("mesh mTLS required: the caller has no mesh identity, and access is " + AccessName(p.access))
	case ReasonForeignTrustDomain:
		b.WriteString("no authorization allows " + id + ", and access is cluster-authenticated (only " + strings.TrimSuffix(p.trustPrefix, "/") + ")")
	default:
		who := "an unauthenticated caller"
		if id != "" {
			who = id
		}
		b.WriteString("no authorization allows " + who + ", and access is " + AccessName(p.access))
	}
	return b.String()
}

func quote(s string) string { return `"` + s + `"` }

// allows is the contract: (no networks, or ip in one network and in none
// of its exceptions) and (unauthenticated, or a verified identity that is
// listed, "*", or of a listed namespace).
func (a *authorization) allows(id string, ip netip.Addr) bool {
	if len(a.nets) > 0 && !inNets(a.nets, ip) {
		return false
	}
	if a.unauth {
		return true
	}
	if id == "" {
		return false
	}
	if a.anyID {
		return true
	}
	for _, x := range a.ids {
		if x == id {
			return true
		}
	}
	if len(a.namespaces) > 0 {
		ns, ok := namespaceOf(id)
		if !ok {
			return false
		}
		for _, x := range a.namespaces {
			if x == ns {
				return true
			}
		}
	}
	return false
}

func inNets(nets []network, ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	for i := range nets {
		n := &nets[i]
		if !n.prefix.Contains(ip) {
			continue
		}
		excluded := false
		for _, e := range n.except {
			if e.Contains(ip) {
				excluded = true
				break
			}
		}
		if !excluded {
			return true
		}
	}
	return false
}

// namespaceOf is the namespace of spiffe://<td>/ns/<ns>/sa/<sa>, without
// allocating.
func namespaceOf(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return "", false
	}
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return "", false
	}
	rest, ok = strings.CutPrefix(rest[i:], "/ns/")
	if !ok {
		return "", false
	}
	ns, sa, ok := strings.Cut(rest, "/sa/")
	if !ok || ns == "" || sa == "" || strings.Contains(ns, "/") || strings.Contains(sa, "/") {
		return "", false
	}
	return ns, true
}
