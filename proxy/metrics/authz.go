package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxAuthzClients bounds the client_id values of the authorization metrics
// per proxy: a caller chooses its identity within what mesh TLS accepts,
// and unauthenticated callers are "" anyway.
const MaxAuthzClients = 500

// OtherClient is the client_id of callers past MaxAuthzClients.
const OtherClient = "(other)"

// Authz is trellis_inbound_authz_{allow,deny,audit}_total (docs/metrics.md).
type Authz struct {
	allow, deny, audit *prometheus.CounterVec

	clients  sync.Map // client_id -> struct{}
	nClients atomic.Int64
	counters sync.Map // authzKey -> prometheus.Counter
}

// AuthzLabels is one decision's labels. Authz is set for an allowed call,
// Reason for a denied one.
type AuthzLabels struct {
	Server, Route, Authz, ClientID string
	TLS                            bool
	Reason                         string
}

type authzKey struct {
	kind string
	l    AuthzLabels
}

// NewAuthz creates the authorization metrics and registers them on reg
// (nil: unregistered).
func NewAuthz(reg prometheus.Registerer) (*Authz, error) {
	a := &Authz{
		allow: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_inbound_authz_allow_total",
			Help: "Inbound requests and connections an authorization policy allowed, by server, route and what allowed them.",
		}, []string{"server", "route", "authz", "client_id", "tls"}),
		deny: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_inbound_authz_deny_total",
			Help: "Inbound requests and connections an authorization policy denied (never forwarded), by server, route and reason.",
		}, []string{"server", "route", "client_id", "tls", "reason"}),
		audit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_inbound_authz_audit_total",
			Help: "Inbound requests and connections an audit policy let through that it would have denied.",
		}, []string{"server", "route", "client_id", "tls"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.allow, a.deny, a.audit} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// Allow counts an allowed call.
func (a *Authz) Allow(l AuthzLabels) { a.counter("allow", l).Inc() }

// Deny counts a denied call.
func (a *Authz) Deny(l AuthzLabels) { a.counter("deny", l).Inc() }

// Audit counts a would-be denial let through.
func (a *Authz) Audit(l AuthzLabels) { a.counter("audit", l).Inc() }

func (a *Authz) counter(kind string, l AuthzLabels) prometheus.Counter {
	k := authzKey{kind: kind, l: l}
	if c, ok := a.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	k.l.ClientID = a.client(l.ClientID)
	if c, ok := a.counters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	tls := strconv.FormatBool(l.TLS)
	var c prometheus.Counter
	switch kind {
	case "allow":
		c = a.allow.WithLabelValues(l.Server, l.Route, l.Authz, k.l.ClientID, tls)
	case "deny":
		c = a.deny.WithLabelValues(l.Server, l.Route, k.l.ClientID, tls, l.Reason)
	default:
		c = a.audit.WithLabelValues(l.Server, l.Route, k.l.ClientID, tls)
	}
	a.counters.Store(k, c)
	return c
}

// client is id, or OtherClient once MaxAuthzClients others are known.
func (a *Authz) client(id string) string {
	if _, ok := a.clients.Load(id); ok {
		return id
	}
	if a.nClients.Add(1) > MaxAuthzClients {
		a.nClients.Add(-1)
		return OtherClient
	}
	if _, loaded := a.clients.LoadOrStore(id, struct{}{}); loaded {
		a.nClients.Add(-1)
	}
	return id
}
