// Package policy decides who may reach the application behind the
// inbound proxy. The inbound chain's authz stage asks an Authorizer about
// every request (and the listener about every stream that is not HTTP);
// the default one is the --default-inbound-policy. Authorization policies
// from the control plane plug in as another Authorizer. Which address a
// request may reach at all (only the app's ports, never the proxy's own
// listeners) is the inbound target guard's decision, made before this one
// is asked.
package policy

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Default inbound policies (--default-inbound-policy).
const (
	// AllUnauthenticated lets callers without mesh TLS reach the app
	// (plain HTTP, raw TCP, the app's own TLS): the default.
	AllUnauthenticated = "all-unauthenticated"
	// AllAuthenticated lets only mesh mTLS peers reach the app.
	AllAuthenticated = "all-authenticated"
)

// Caller is who asks: what mesh TLS proved.
type Caller struct {
	// Identity is the caller's mesh identity, "" without mesh TLS.
	Identity string
	TLS      bool
}

// Authorizer decides whether a caller may send a request to the app: nil,
// or why not (a *Denial names the reason). r is nil for a stream that is
// not HTTP (opaque TCP, the app's own TLS).
type Authorizer interface {
	Authorize(ctx context.Context, c Caller, r *http.Request) error
}

// Denial is why a caller may not reach the app: its message is what the
// caller is told (trellis-error, 403) and what the log says.
type Denial struct {
	Reason string
	Msg    string
}

func (d *Denial) Error() string { return d.Msg }

// RefusalReason is the metric label of the denial.
func (d *Denial) RefusalReason() string { return d.Reason }

// ErrUnauthenticated refuses a caller without a mesh identity.
var ErrUnauthenticated = &Denial{Reason: metrics.ReasonUnauthenticated,
	Msg: "mesh mTLS required: this proxy's default inbound policy is all-authenticated, and the caller has no mesh identity"}

// Default is the default inbound policy as an Authorizer.
type Default struct {
	// Policy is AllUnauthenticated or AllAuthenticated.
	Policy string
}

// NewDefault returns the Authorizer of a --default-inbound-policy value
// ("" is AllUnauthenticated).
func NewDefault(policy string) (Default, error) {
	switch policy {
	case "":
		return Default{Policy: AllUnauthenticated}, nil
	case AllUnauthenticated, AllAuthenticated:
		return Default{Policy: policy}, nil
	}
	return Default{}, errors.New("default policy must be " + AllUnauthenticated + " or " + AllAuthenticated + ", got " + strconv.Quote(policy))
}

// Authorize refuses callers without mesh TLS under AllAuthenticated.
func (d Default) Authorize(_ context.Context, c Caller, _ *http.Request) error {
	if d.Policy == AllAuthenticated && !c.TLS {
		return ErrUnauthenticated
	}
	return nil
}

// RequiresMTLS reports whether every caller without mesh TLS is refused,
// whatever it asks: the listener then detects even opaque ports, to serve
// mesh TLS there and refuse the rest.
func (d Default) RequiresMTLS() bool { return d.Policy == AllAuthenticated }
