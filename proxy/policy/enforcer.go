package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/authz"
	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/inboundpolicy"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// Source is the policy of each inbound port (inboundpolicy.Watcher).
type Source interface {
	Get(ctx context.Context, port uint16) inboundpolicy.Snapshot
}

// ReasonUnwatched is the denial of a port the proxy keeps no policy watch
// for (past inboundpolicy's bound on learned ports): a stranger who dials
// many ports must not turn a Server's policy into the default.
const ReasonUnwatched = "policy_unknown"

// DefaultFirstAnswer bounds the wait for the controller's first answer
// about a port before the default applies to a call.
const DefaultFirstAnswer = 2 * time.Second

// EnforcerConfig configures an Enforcer. Source is required.
type EnforcerConfig struct {
	Source Source
	// Default is the --default-inbound-policy value.
	Default     string
	TrustDomain string
	Metrics     *metrics.Authz // nil: unregistered
	Logger      *slog.Logger
	// FirstAnswer bounds the wait for a port's first answer (default
	// DefaultFirstAnswer).
	FirstAnswer time.Duration
}

// Enforcer is the Authorizer of the Server policies the control plane
// sends: each new answer of a port is compiled once, every call is decided
// against the port's answer of the moment (so a change applies to the next
// request or connection, never to one in flight), and counted. A port
// without an answer has the default; a port past the watch bound is
// denied (the stricter of the default and deny, see docs/policy.md).
type Enforcer struct {
	src       Source
	defaults  authz.Defaults
	unwatched *authz.Policy
	m         *metrics.Authz
	log       *ratelog.Limiter
	first     time.Duration
	done      context.Context // cancelled: a Get that does not wait
	ports     sync.Map        // uint16 -> *compiled
}

type compiled struct {
	src *apiv1.ServerPolicy
	pol *authz.Policy
	ctl bool // src is the controller's answer, not the default
}

// NewEnforcer returns the Enforcer of cfg.
func NewEnforcer(cfg EnforcerConfig) (*Enforcer, error) {
	if cfg.Source == nil {
		return nil, errors.New("policy: Source is required")
	}
	acc, err := authz.ParseAccess(cfg.Default)
	if err != nil {
		return nil, err
	}
	e := &Enforcer{src: cfg.Source, defaults: authz.Defaults{Access: acc, TrustDomain: cfg.TrustDomain},
		m: cfg.Metrics, first: cfg.FirstAnswer}
	if e.m == nil {
		e.m, _ = metrics.NewAuthz(nil)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e.log = ratelog.New(log, 0)
	if e.first <= 0 {
		e.first = DefaultFirstAnswer
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	e.done = done
	e.unwatched, err = compileDefault(authz.Stricter(acc, apiv1.AccessPolicy_DENY), cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	return e, nil
}

// Authorize decides c's call (r nil: a connection that is not HTTP).
func (e *Enforcer) Authorize(ctx context.Context, c Caller, r *http.Request) error {
	pol, unwatched := e.policy(ctx, c.Port)
	d := pol.Decide(Input(c, r))
	l := metrics.AuthzLabels{Server: d.Server, Route: d.Route, ClientID: c.identity(), TLS: c.TLS}
	switch {
	case d.Allowed && !d.Audited:
		l.Authz = d.Authz
		e.m.Allow(l)
		return nil
	case d.Audited:
		e.m.Audit(l)
		e.logDecision(ctx, c, d, "inbound: audit: would deny")
		return nil
	}
	if unwatched {
		d.Reason = ReasonUnwatched
		d.Msg = fmt.Sprintf("denied: port %d has no policy watch (this proxy watches at most %d learned ports; list the app's ports in --app-ports)",
			c.Port, inboundpolicy.DefaultMaxLearnedPorts)
		if c.Port == 0 {
			d.Msg = "denied: the target port is unknown, so is its policy"
		}
	}
	l.Reason = d.Reason
	e.m.Deny(l)
	e.logDecision(ctx, c, d, "inbound: authorization denied")
	return &Denial{Reason: d.Reason, Msg: d.Msg, Logged: true}
}

// Check reports whether Authorize would let c in, without counting or
// logging.
func (e *Enforcer) Check(ctx context.Context, c Caller, r *http.Request) bool {
	pol, _ := e.policy(ctx, c.Port)
	return pol.Decide(Input(c, r)).Allowed
}

func (c Caller) identity() string {
	if c.TLS {
		return c.Identity
	}
	return ""
}

// logDecision logs a denial or an audit once per client, server and
// kind per minute.
func (e *Enforcer) logDecision(ctx context.Context, c Caller, d authz.Decision, msg string) {
	client := c.identity()
	if client == "" {
		client = "unauthenticated " + c.ClientIP.String()
	}
	e.log.Log(ctx, slog.LevelWarn, msg+"\x00"+client+"\x00"+d.Server, msg,
		"client", client, "client_ip", c.ClientIP.String(), "port", c.Port, "server", d.Server, "route", d.Route,
		"reason", d.Reason, "detail", d.Msg)
}

// policy returns the compiled policy of port now, and whether the port is
// unwatched. A port with an answer is served without waiting; a port
// without one waits up to FirstAnswer for it.
func (e *Enforcer) policy(ctx context.Context, port uint16) (*authz.Policy, bool) {
	s := e.src.Get(e.done, port)
	if !s.FromController && !s.Unwatched {
		wctx, cancel := context.WithTimeout(ctx, e.first)
		s = e.src.Get(wctx, port)
		cancel()
	}
	if s.Unwatched && !s.FromController {
		return e.unwatched, true
	}
	if !s.FromController {
		// No answer now, but one before: the watch of a learned port
		// was swept while idle, and the controller is unreachable. Its
		// last answer stays, as a watched port's does.
		if v, ok := e.ports.Load(port); ok && v.(*compiled).ctl {
			return v.(*compiled).pol, false
		}
	}
	return e.compiled(port, s.Policy, s.FromController), false
}

// compiled returns p compiled, once per answer of a port. An answer that
// does not compile (the watcher's Check refuses those first) keeps the
// port's previous policy, or the default's without one.
func (e *Enforcer) compiled(port uint16, p *apiv1.ServerPolicy, ctl bool) *authz.Policy {
	if v, ok := e.ports.Load(port); ok && v.(*compiled).src == p {
		return v.(*compiled).pol
	}
	pol, err := authz.Compile(p, e.defaults)
	if err != nil {
		e.log.Log(context.Background(), slog.LevelError, "compile\x00"+p.GetName(), "inbound: policy refused, the previous one stays",
			"port", port, "policy", p.GetName(), "err", err)
		if v, ok := e.ports.Load(port); ok {
			return v.(*compiled).pol
		}
		pol, _ = compileDefault(e.defaults.Access, e.defaults.TrustDomain)
		return pol
	}
	e.ports.Store(port, &compiled{src: p, pol: pol, ctl: ctl})
	return pol
}
