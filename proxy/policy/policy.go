// Package policy decides who may reach the application behind the
// inbound proxy. The inbound chain's authz stage asks an Authorizer about
// every request (and the listener about every stream that is not HTTP).
// Default is the --default-inbound-policy alone; Enforcer (enforcer.go)
// decides with the Server policies the control plane sends per port, with
// internal/authz. Which address a request may reach at all (only the app's
// ports, never the proxy's own listeners) is the inbound target guard's
// decision, made before this one is asked.
package policy

import (
	"context"
	"net/http"
	"net/netip"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Default inbound policies (--default-inbound-policy).
const (
	// AllUnauthenticated lets callers without mesh TLS reach the app
	// (plain HTTP, raw TCP, the app's own TLS): the default.
	AllUnauthenticated = authz.AllUnauthenticated
	// AllAuthenticated lets only mesh mTLS peers reach the app.
	AllAuthenticated = authz.AllAuthenticated
	// ClusterAuthenticated lets only mesh mTLS peers of this proxy's
	// trust domain reach the app.
	ClusterAuthenticated = authz.ClusterAuthenticated
	// Deny lets nobody reach the app but what a policy allows.
	Deny = authz.Deny
	// Audit lets everyone in, and counts and logs who a deny would refuse.
	Audit = authz.Audit
)

// Caller is who asks: what mesh TLS proved, and where from.
type Caller struct {
	// Identity is the caller's mesh identity, "" without mesh TLS.
	Identity string
	TLS      bool
	// ClientIP is the connection's remote address (invalid: unknown).
	ClientIP netip.Addr
	// Port is the app port the call is for (0: unknown).
	Port uint16
}

// Authorizer decides whether a caller may send a request to the app: nil,
// or why not (a *Denial names the reason). r is nil for a stream that is
// not HTTP (opaque TCP, the app's own TLS).
type Authorizer interface {
	Authorize(ctx context.Context, c Caller, r *http.Request) error
}

// Checker is an Authorizer that can also answer without counting or
// logging: for the listener, to choose whether a connection needs
// detection before any decision is made.
type Checker interface {
	Check(ctx context.Context, c Caller, r *http.Request) bool
}

// Denial is why a caller may not reach the app: its message is what the
// caller is told (trellis-error, 403, grpc-message) and what the log says.
type Denial struct {
	Reason string
	Msg    string
	// Logged: the Authorizer logged it already (once per client and
	// server a minute).
	Logged bool
}

func (d *Denial) Error() string { return d.Msg }

// RefusalReason is the metric label of the denial.
func (d *Denial) RefusalReason() string { return d.Reason }

// ErrUnauthenticated refuses a caller without a mesh identity.
var ErrUnauthenticated = &Denial{Reason: metrics.ReasonUnauthenticated,
	Msg: "mesh mTLS required: this proxy's default inbound policy is all-authenticated, and the caller has no mesh identity"}

// Default is the default inbound policy as an Authorizer: what a port
// without any Server policy gets.
type Default struct {
	// Policy is one of the --default-inbound-policy values.
	Policy string
	// TrustDomain is this proxy's, for cluster-authenticated.
	TrustDomain string
	pol         *authz.Policy
}

// NewDefault returns the Authorizer of a --default-inbound-policy value
// ("" is AllUnauthenticated), without a trust domain (cluster-
// authenticated then lets nobody in; see NewDefaultIn).
func NewDefault(policy string) (Default, error) { return NewDefaultIn(policy, "") }

// NewDefaultIn is NewDefault for a proxy of trustDomain.
func NewDefaultIn(policy, trustDomain string) (Default, error) {
	acc, err := authz.ParseAccess(policy)
	if err != nil {
		return Default{}, err
	}
	pol, err := compileDefault(acc, trustDomain)
	if err != nil {
		return Default{}, err
	}
	return Default{Policy: authz.AccessName(acc), TrustDomain: trustDomain, pol: pol}, nil
}

// compileDefault is the policy of a port with no Server: the access alone.
func compileDefault(acc apiv1.AccessPolicy, trustDomain string) (*authz.Policy, error) {
	return authz.Compile(&apiv1.ServerPolicy{Name: "default", Source: authz.SourceDefault},
		authz.Defaults{Access: acc, TrustDomain: trustDomain})
}

// Authorize applies the default policy.
func (d Default) Authorize(_ context.Context, c Caller, r *http.Request) error {
	pol, err := d.policy()
	if err != nil {
		return &Denial{Reason: authz.ReasonUnauthorized, Msg: err.Error()}
	}
	dec := pol.Decide(Input(c, r))
	if dec.Allowed {
		return nil
	}
	if dec.Reason == authz.ReasonUnauthenticated && d.Policy == AllAuthenticated {
		return ErrUnauthenticated
	}
	return &Denial{Reason: dec.Reason, Msg: dec.Msg}
}

// Check reports whether Authorize would let c in.
func (d Default) Check(ctx context.Context, c Caller, r *http.Request) bool {
	return d.Authorize(ctx, c, r) == nil
}

func (d Default) policy() (*authz.Policy, error) {
	if d.pol != nil {
		return d.pol, nil
	}
	// A literal Default{Policy: ...}: compiled per call.
	nd, err := NewDefaultIn(d.Policy, d.TrustDomain)
	return nd.pol, err
}

// RequiresMTLS reports whether every caller without mesh TLS is refused,
// whatever it asks: the listener then detects even opaque ports, to serve
// mesh TLS there and refuse the rest.
func (d Default) RequiresMTLS() bool {
	switch d.Policy {
	case AllAuthenticated, ClusterAuthenticated, Deny:
		return true
	}
	return false
}

// Input is the authz.Input of a call.
func Input(c Caller, r *http.Request) authz.Input {
	in := authz.Input{Identity: c.Identity, TLS: c.TLS, ClientIP: c.ClientIP, Conn: r == nil}
	if r != nil {
		in.Method, in.Path, in.RawPath, in.Header = r.Method, r.URL.Path, r.URL.EscapedPath(), r.Header
	}
	return in
}
