package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MaxAuthzClients bounds the client_id values of the authorization metrics
// per proxy: a caller chooses its identity within what mesh TLS accepts,
// and unauthenticated callers are "" anyway.
const MaxAuthzClients = 500

// OtherClient is the client_id of callers past MaxAuthzClients.
const OtherClient = "(other)"

// Authz is trellis_inbound_authz_{allow,deny,audit}_total and
// trellis_inbound_authz_last_seen_timestamp_seconds (docs/metrics.md).
type Authz struct {
	allow, deny, audit *prometheus.CounterVec
	// lastSeen is when each decision for a server, route and client was
	// last made, so that `trellis policy suggest --since` can leave out
	// clients not seen lately (counters only say "since the proxy started").
	lastSeen *prometheus.GaugeVec
	now      func() time.Time

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

// authzSeries is one counter series and its last-seen gauge; last is the
// second last written to the gauge, so a busy series writes it once a
// second, not once a call.
type authzSeries struct {
	c    prometheus.Counter
	seen prometheus.Gauge
	last atomic.Int64
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
		lastSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trellis_inbound_authz_last_seen_timestamp_seconds",
			Help: "When the proxy last made this decision (allow, deny, audit) for this server, route and client, in Unix seconds.",
		}, []string{"decision", "server", "route", "client_id", "tls"}),
		now: time.Now,
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{a.allow, a.deny, a.audit, a.lastSeen} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// Allow counts an allowed call.
func (a *Authz) Allow(l AuthzLabels) { a.series("allow", l).inc(a.now) }

// Deny counts a denied call.
func (a *Authz) Deny(l AuthzLabels) { a.series("deny", l).inc(a.now) }

// Audit counts a would-be denial let through.
func (a *Authz) Audit(l AuthzLabels) { a.series("audit", l).inc(a.now) }

func (s *authzSeries) inc(now func() time.Time) {
	s.c.Inc()
	if t := now().Unix(); s.last.Load() != t {
		s.last.Store(t)
		s.seen.Set(float64(t))
	}
}

func (a *Authz) series(kind string, l AuthzLabels) *authzSeries {
	k := authzKey{kind: kind, l: l}
	if s, ok := a.counters.Load(k); ok {
		return s.(*authzSeries)
	}
	k.l.ClientID = a.client(l.ClientID)
	if s, ok := a.counters.Load(k); ok {
		return s.(*authzSeries)
	}
	tls := strconv.FormatBool(l.TLS)
	s := &authzSeries{seen: a.lastSeen.WithLabelValues(kind, l.Server, l.Route, k.l.ClientID, tls)}
	switch kind {
	case "allow":
		s.c = a.allow.WithLabelValues(l.Server, l.Route, l.Authz, k.l.ClientID, tls)
	case "deny":
		s.c = a.deny.WithLabelValues(l.Server, l.Route, k.l.ClientID, tls, l.Reason)
	default:
		s.c = a.audit.WithLabelValues(l.Server, l.Route, k.l.ClientID, tls)
	}
	got, _ := a.counters.LoadOrStore(k, s)
	return got.(*authzSeries)
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
