// Package authz is the one evaluator of inbound authorization policy: it
// compiles an apiv1.ServerPolicy once (networks parsed, routes indexed) and
// decides each call against it. It is pure, with no proxy imports: the
// proxy's authz stage and `trellis policy explain` both run it, so that
// explain says exactly what the proxy does. The semantics are the contract
// of api/v1/policy.proto, described in docs/policy.md ("How the proxy
// decides").
package authz

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/routematch"
)

// SourceDefault is ServerPolicy.source when no Server selects the port.
const SourceDefault = "default"

// legacyDefaultName is the name a controller from before the access
// field gave its default answer (with an allow-all authorization and no
// source); Servers are named "server/<name>".
const legacyDefaultName = "default"

// IsDefault reports whether sp is the default's answer (no Server selects
// the port): source "default", or a legacy controller's default.
func IsDefault(sp *apiv1.ServerPolicy) bool {
	return sp.GetSource() == SourceDefault || (sp.GetSource() == "" && sp.GetName() == legacyDefaultName &&
		sp.GetAccess() == apiv1.AccessPolicy_ACCESS_UNSPECIFIED && len(sp.GetRoutes()) == 0)
}

// Unnamed is Decision.Authz for an authorization without a name.
const Unnamed = "(unnamed)"

// MaxAuthorizations bounds the authorizations of a policy (server and
// routes together): a hostile or broken answer must not make every request
// scan without end.
const MaxAuthorizations = 10000

// Defaults is what the proxy itself configures.
type Defaults struct {
	// Access is the proxy's default inbound policy (ParseAccess of
	// --default-inbound-policy); ACCESS_UNSPECIFIED is ALL_UNAUTHENTICATED.
	Access apiv1.AccessPolicy
	// TrustDomain is the proxy's own, for CLUSTER_AUTHENTICATED.
	TrustDomain string
}

// Policy is a compiled ServerPolicy. It is immutable and safe for
// concurrent use.
type Policy struct {
	server      string // metric label: the name, or "default:<access>"
	access      apiv1.AccessPolicy
	accessAuthz string // Decision.Authz when access lets a caller in
	authzs      authzSet
	routes      []route
	table       *routematch.Table // nil without routes
	trustPrefix string            // "spiffe://<trust domain>/"
	// httpOnly: the port's Limits hold HTTP requests to a rate or a
	// concurrency, so a stream that is not HTTP (one whose detection
	// timed out, an opaque mesh stream) would escape them: refused.
	httpOnly bool
}

type route struct {
	name   string
	authzs authzSet
}

type authorization struct {
	name       string
	unauth     bool
	anyID      bool
	ids        []string
	namespaces []string
	nets       []network
}

type network struct {
	prefix netip.Prefix
	except []netip.Prefix
}

// Compile checks sp and compiles it with the proxy's defaults. An error
// names the authorization, route or network at fault; the caller keeps
// its previous policy.
func Compile(sp *apiv1.ServerPolicy, def Defaults) (*Policy, error) {
	if sp == nil {
		return nil, errors.New("authz: no policy")
	}
	access, err := effectiveAccess(sp, def)
	if err != nil {
		return nil, fmt.Errorf("policy %q: %w", sp.GetName(), err)
	}
	p := &Policy{access: access, accessAuthz: "access:" + AccessName(access), server: sp.GetName(),
		trustPrefix: "spiffe://" + def.TrustDomain + "/"}
	serverAuthzs := sp.GetAuthorizations()
	if IsDefault(sp) {
		// No Server: the proxy's default decides, with the answer's
		// routes (the probes); a default answer's own authorizations
		// (a legacy controller's allow-all) would defeat it.
		p.server = "default:" + AccessName(access)
		serverAuthzs = nil
	}
	n := len(sp.GetAuthorizations())
	for _, r := range sp.GetRoutes() {
		n += len(r.GetAuthorizations())
	}
	if n > MaxAuthorizations {
		return nil, fmt.Errorf("policy %q: %d authorizations, more than %d", sp.GetName(), n, MaxAuthorizations)
	}
	if _, err = compileAuthorizations(sp.GetAuthorizations()); err != nil {
		return nil, fmt.Errorf("policy %q: %w", sp.GetName(), err)
	}
	server, err := compileAuthorizations(serverAuthzs)
	if err != nil {
		return nil, fmt.Errorf("policy %q: %w", sp.GetName(), err)
	}
	p.authzs = newAuthzSet(server)
	p.httpOnly = limitsRequests(sp.GetLimits()) && sp.GetProtocol() != apiv1.ProtocolHint_OPAQUE
	if err := p.compileRoutes(sp.GetRoutes()); err != nil {
		return nil, fmt.Errorf("policy %q: %w", sp.GetName(), err)
	}
	return p, nil
}

// effectiveAccess applies the contract: the default's answer and an
// unspecified access take the proxy's configured default; the old audit
// flag is AUDIT when access is unspecified.
func effectiveAccess(sp *apiv1.ServerPolicy, def Defaults) (apiv1.AccessPolicy, error) {
	if _, ok := apiv1.AccessPolicy_name[int32(sp.GetAccess())]; !ok {
		return 0, fmt.Errorf("unknown access policy %d", sp.GetAccess())
	}
	if _, ok := apiv1.AccessPolicy_name[int32(def.Access)]; !ok {
		return 0, fmt.Errorf("unknown default access policy %d", def.Access)
	}
	fallback := def.Access
	if fallback == apiv1.AccessPolicy_ACCESS_UNSPECIFIED {
		fallback = apiv1.AccessPolicy_ALL_UNAUTHENTICATED
	}
	switch {
	case IsDefault(sp):
		return fallback, nil
	case sp.GetAccess() != apiv1.AccessPolicy_ACCESS_UNSPECIFIED:
		return sp.GetAccess(), nil
	case sp.GetAudit():
		return apiv1.AccessPolicy_AUDIT, nil
	}
	return fallback, nil
}

func (p *Policy) compileRoutes(rs []*apiv1.InboundRoute) error {
	if len(rs) == 0 {
		return nil
	}
	matches := make([][]*apiv1.RouteMatch, len(rs))
	p.routes = make([]route, len(rs))
	for i, r := range rs {
		matches[i] = r.GetMatches()
		az, err := compileAuthorizations(r.GetAuthorizations())
		if err != nil {
			return fmt.Errorf("route %q: %w", r.GetName(), err)
		}
		p.routes[i] = route{name: r.GetName(), authzs: newAuthzSet(az)}
	}
	t, err := routematch.NewTable(matches)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	p.table = t
	return nil
}

func compileAuthorizations(as []*apiv1.Authorization) ([]authorization, error) {
	out := make([]authorization, 0, len(as))
	for _, a := range as {
		c, err := compileAuthorization(a)
		if err != nil {
			return nil, fmt.Errorf("authorization %q: %w", a.GetName(), err)
		}
		out = append(out, c)
	}
	return out, nil
}

func compileAuthorization(a *apiv1.Authorization) (authorization, error) {
	c := authorization{name: a.GetName(), unauth: a.GetUnauthenticated()}
	if c.name == "" {
		// Decision.Authz (the authz label) must name what allowed a call.
		c.name = Unnamed
	}
	for _, id := range a.GetIdentities() {
		if id == "*" {
			c.anyID = true
			continue
		}
		if _, err := identity.Parse(id); err != nil {
			return c, fmt.Errorf("identity: %w", err)
		}
		c.ids = append(c.ids, id)
	}
	for _, ns := range a.GetNamespaces() {
		if ns == "" || strings.ContainsAny(ns, "/ ") {
			return c, fmt.Errorf("namespace %q: not a namespace name", ns)
		}
		c.namespaces = append(c.namespaces, ns)
	}
	for _, s := range a.GetNetworks() {
		pfx, err := parsePrefix(s)
		if err != nil {
			return c, fmt.Errorf("network: %w", err)
		}
		c.nets = append(c.nets, network{prefix: pfx})
	}
	for _, n := range a.GetNets() {
		pfx, err := parsePrefix(n.GetCidr())
		if err != nil {
			return c, fmt.Errorf("network: %w", err)
		}
		nw := network{prefix: pfx}
		for _, e := range n.GetExcept() {
			ex, err := parsePrefix(e)
			if err != nil {
				return c, fmt.Errorf("network %s: except: %w", pfx, err)
			}
			nw.except = append(nw.except, ex)
		}
		c.nets = append(c.nets, nw)
	}
	return c, nil
}

// parsePrefix parses a CIDR, masked and unmapped so that IPv4 callers
// match IPv4 networks. A bare address is refused: /32 or /128 says it.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR: %w", s, err)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// Input is one call: a request, or a connection that is not HTTP.
type Input struct {
	// Identity is the caller's mesh identity as mesh TLS verified it;
	// ignored unless TLS.
	Identity string
	TLS      bool
	ClientIP netip.Addr
	// Conn: a connection (opaque TCP, TLS passthrough), not a request:
	// no route is matched, the server's authorizations and access decide.
	Conn   bool
	Method string
	// Path is the request's decoded URL path; dot segments are resolved
	// before matching.
	Path string
	// RawPath is the path as the app receives it (the escaped path); ""
	// when unknown. A path the app may read as another route than Path
	// matches no route (routematch.Table.SelectStrict).
	RawPath string
	Header  http.Header
}

// Server is the policy's metric label: its name, or "default:<access>".
func (p *Policy) Server() string { return p.server }

// Access is the access policy in force (after the defaults applied).
func (p *Policy) Access() apiv1.AccessPolicy { return p.access }

// limitsRequests reports whether l limits HTTP requests in any way.
func limitsRequests(l *apiv1.Limits) bool {
	if l == nil {
		return false
	}
	return l.GetRequestsPerSecond() > 0 || l.GetMaxConcurrency() > 0 || l.GetClientRequestsPerSecond() > 0 ||
		len(l.GetOverrides()) > 0 || l.GetAdaptiveConcurrency() != nil
}
