// Package policycmd is `trellis authz` and `trellis policy explain|suggest`
// (docs/policy.md): what the proxies' authorization metrics say per server
// and route, why a call would be allowed or denied, and the least-privilege
// Server and AuthorizationPolicy objects that allow exactly the traffic
// the proxies saw. The logic is pure (observations in, objects or rows
// out); sources.go reads the workloads and metrics from a cluster or a
// local store file.
package policycmd

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric names of the proxies' authorization stage (docs/metrics.md).
const (
	AllowMetric = "trellis_inbound_authz_allow_total"
	DenyMetric  = "trellis_inbound_authz_deny_total"
	AuditMetric = "trellis_inbound_authz_audit_total"
	// LastSeenMetric says when each decision was last made for a server,
	// route and client (Unix seconds): what --since filters on.
	LastSeenMetric = "trellis_inbound_authz_last_seen_timestamp_seconds"
)

// Decisions, as Sample.Decision.
const (
	Allow = "allow"
	Deny  = "deny"
	Audit = "audit"
)

// ProbesRoute is the route the controller adds for kubelet probes: its
// unauthenticated traffic needs no policy of the user's.
const ProbesRoute = "probes"

// OtherClient is the client_id a proxy reports past its cardinality bound.
const OtherClient = "(other)"

// Sample is one series of one proxy: a decision, its labels and count.
type Sample struct {
	Decision string
	Server   string
	Route    string
	Authz    string
	ClientID string
	TLS      bool
	Reason   string
	// Port is the inbound port, when the proxy labels it; 0 otherwise.
	Port  uint32
	Count float64
	// LastSeen is when the proxy last made this decision for this server,
	// route and client (zero: the proxy does not say).
	LastSeen time.Time
}

// key is a Sample without its count and time.
func (s Sample) key() Sample { s.Count, s.LastSeen = 0, time.Time{}; return s }

// seenKey is what the last-seen gauge is labelled with.
type seenKey struct {
	decision, server, route, client string
	tls                             bool
}

// ParseMetrics reads a proxy's Prometheus text exposition and returns its
// authorization samples, in a stable order. Other families are ignored.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	seen := lastSeen(fams[LastSeenMetric])
	var out []Sample
	for name, decision := range map[string]string{AllowMetric: Allow, DenyMetric: Deny, AuditMetric: Audit} {
		for _, m := range fams[name].GetMetric() {
			v := m.GetCounter().GetValue() + m.GetUntyped().GetValue()
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				continue
			}
			s := Sample{Decision: decision, Count: v}
			for _, l := range m.GetLabel() {
				setLabel(&s, l)
			}
			s.LastSeen = seen[seenKey{decision, s.Server, s.Route, s.ClientID, s.TLS}]
			out = append(out, s)
		}
	}
	sortSamples(out)
	return out, nil
}

// lastSeen reads the last-seen gauge; a value that is not a plausible
// Unix time is ignored (the sample then has no time).
func lastSeen(fam *dto.MetricFamily) map[seenKey]time.Time {
	out := map[seenKey]time.Time{}
	for _, m := range fam.GetMetric() {
		v := m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		if math.IsNaN(v) || v <= 0 || v > 1e11 {
			continue
		}
		var s Sample
		d := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == "decision" {
				d = l.GetValue()
			}
			setLabel(&s, l)
		}
		out[seenKey{d, s.Server, s.Route, s.ClientID, s.TLS}] = time.Unix(int64(v), 0)
	}
	return out
}

// Recent keeps the samples of decisions made since cutoff. A proxy that
// does not say when it last decided (an older version) is an error naming
// its pod: its counters cover its whole life, which --since cannot narrow.
func Recent(pods []Pod, cutoff time.Time) ([]Pod, error) {
	out := make([]Pod, 0, len(pods))
	for _, p := range pods {
		q := p
		q.Samples = nil
		for _, s := range p.Samples {
			if s.LastSeen.IsZero() {
				return nil, fmt.Errorf("pod %s/%s: its proxy does not export %s (an older version): drop --since, or restart it onto this version", p.Namespace, p.Name, LastSeenMetric)
			}
			if !s.LastSeen.Before(cutoff) {
				q.Samples = append(q.Samples, s)
			}
		}
		out = append(out, q)
	}
	return out, nil
}

func setLabel(s *Sample, l *dto.LabelPair) {
	v := l.GetValue()
	switch l.GetName() {
	case "server":
		s.Server = v
	case "route":
		s.Route = v
	case "authz":
		s.Authz = v
	case "client_id":
		s.ClientID = v
	case "tls":
		s.TLS = v == "true"
	case "reason":
		s.Reason = v
	case "port":
		if p, err := strconv.ParseUint(v, 10, 16); err == nil {
			s.Port = uint32(p)
		}
	}
}

func sortSamples(ss []Sample) {
	sort.Slice(ss, func(i, j int) bool {
		a, b := ss[i], ss[j]
		if a.Server != b.Server {
			return a.Server < b.Server
		}
		if a.Route != b.Route {
			return a.Route < b.Route
		}
		if a.Decision != b.Decision {
			return a.Decision < b.Decision
		}
		if a.ClientID != b.ClientID {
			return a.ClientID < b.ClientID
		}
		return fmt.Sprint(a.Port, a.Authz, a.Reason, a.TLS) < fmt.Sprint(b.Port, b.Authz, b.Reason, b.TLS)
	})
}

// Delta returns what happened between two scrapes of one proxy: cur minus
// prev per series; a series that went down (the proxy restarted) counts
// from zero.
func Delta(prev, cur []Sample) []Sample {
	before := map[Sample]float64{}
	for _, s := range prev {
		before[s.key()] += s.Count
	}
	var out []Sample
	for _, s := range cur {
		d := s.Count - before[s.key()]
		if d < 0 {
			d = s.Count
		}
		if d > 0 {
			s.Count = d
			out = append(out, s)
		}
	}
	return out
}
