package prom

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Labels Prometheus adds to every proxy series when it scrapes with the
// configuration of `trellis viz install` (install/vizk8s): where the
// series comes from. Another Prometheus must relabel the same way
// (docs/observability.md).
const (
	LabelNamespace    = "namespace"
	LabelPod          = "pod"
	LabelWorkloadKind = "workload_kind" // deployment, statefulset, daemonset, job, replicaset, pod
	LabelWorkload     = "workload"
	LabelIdentity     = "identity" // the pod's SPIFFE ID
	// ProxyJob is the job of the proxies' scrape.
	ProxyJob = "trellis-proxy"
)

// Column is one figure of a view and the PromQL that computes it. The
// expressions are templates over three placeholders, so each is written
// once, here, and docs/observability.md shows them:
//
//	$SEL    the label matchers of the rows (direction, resource, filters)
//	$BY     the labels a row is keyed by
//	$WINDOW the range of rate() and increase()
type Column struct {
	Name string
	Expr string
}

// The columns of stat, routes and edges. A success rate is
// success / (success + failure): cancelled requests are neither
// (docs/metrics.md).
var (
	ColRequests = Column{"requests",
		`sum by ($BY) (increase(trellis_responses_total{$SEL,classification=~"success|failure"}[$WINDOW]))`}
	ColRPS = Column{"rps",
		`sum by ($BY) (rate(trellis_responses_total{$SEL,classification=~"success|failure"}[$WINDOW]))`}
	ColSuccessRate = Column{"success_rate",
		`sum by ($BY) (rate(trellis_responses_total{$SEL,classification="success"}[$WINDOW])) / sum by ($BY) (rate(trellis_responses_total{$SEL,classification=~"success|failure"}[$WINDOW]))`}
	ColP50 = Column{"p50", quantileExpr("0.5")}
	ColP95 = Column{"p95", quantileExpr("0.95")}
	ColP99 = Column{"p99", quantileExpr("0.99")}
	// Open connections are a gauge: no window.
	ColTCPConns = Column{"tcp_connections",
		`sum by ($BY) (trellis_tcp_open_connections{$SEL})`}
	// Meshed pods: proxies Prometheus scrapes (up or not), per row.
	ColMeshedPods = Column{"meshed_pods",
		`count by ($BY) (group by ($BY, pod) (up{$SEL}))`}
	// Identities of the pods a resource selects (for --from/--to and
	// edges' destinations).
	ColIdentities = Column{"identities",
		`group by ($BY) (up{$SEL})`}
)

func quantileExpr(q string) string {
	// Seconds; the Go side converts to milliseconds.
	return `histogram_quantile(` + q + `, sum by ($BY, le) (rate(trellis_response_latency_seconds_bucket{$SEL}[$WINDOW])))`
}

// GoldenColumns are the columns of model.Golden, in order.
var GoldenColumns = []Column{ColRequests, ColRPS, ColSuccessRate, ColP50, ColP95, ColP99, ColTCPConns}

// The columns of outbound routes, from the route metrics the client's
// proxy writes for the requests a route matched (docs/metrics.md#routes):
// they carry the route, rule, service and backend but no gRPC status, so
// a success is a status class other than 5xx and 0xx (no response), and
// cancelled requests are neither.
var (
	ColRouteRequests = Column{"requests",
		`sum by ($BY) (increase(trellis_route_requests_total{$SEL,status_class!="cancelled"}[$WINDOW]))`}
	ColRouteRPS = Column{"rps",
		`sum by ($BY) (rate(trellis_route_requests_total{$SEL,status_class!="cancelled"}[$WINDOW]))`}
	ColRouteSuccessRate = Column{"success_rate",
		`sum by ($BY) (rate(trellis_route_requests_total{$SEL,status_class!~"5xx|0xx|cancelled"}[$WINDOW])) / sum by ($BY) (rate(trellis_route_requests_total{$SEL,status_class!="cancelled"}[$WINDOW]))`}
	ColRouteP50 = Column{"p50", routeQuantileExpr("0.5")}
	ColRouteP95 = Column{"p95", routeQuantileExpr("0.95")}
	ColRouteP99 = Column{"p99", routeQuantileExpr("0.99")}
)

func routeQuantileExpr(q string) string {
	return `histogram_quantile(` + q + `, sum by ($BY, le) (rate(trellis_route_response_latency_seconds_bucket{$SEL}[$WINDOW])))`
}

// RouteColumns are the columns of model.Golden for outbound routes (no
// TCP connections: routes are HTTP).
var RouteColumns = []Column{ColRouteRequests, ColRouteRPS, ColRouteSuccessRate, ColRouteP50, ColRouteP95, ColRouteP99}

// RouteLabels key an outbound route's rows besides the client resource:
// the authority the client named (the route's parent), the route, the
// rule's index and the backend the rule picked.
var RouteLabels = []string{"service", "route", "rule", "dst_service"}

// Fill fills a column's placeholders.
func (c Column) Fill(sel []string, by []string, window time.Duration) string {
	r := strings.NewReplacer(
		"$SEL", strings.Join(sel, ","),
		"$BY", strings.Join(by, ","),
		"$WINDOW", promDuration(window),
	)
	return r.Replace(c.Expr)
}

// promDuration writes d as PromQL does: whole seconds (at least 1s).
func promDuration(d time.Duration) string {
	s := int64(d / time.Second)
	if s < 1 {
		s = 1
	}
	return fmt.Sprintf("%ds", s)
}

// eq is the matcher label="value" with value quoted for PromQL.
func eq(label, value string) string { return label + "=" + quote(value) }

// oneOf matches any of values exactly (a regex of quoted literals).
func oneOf(label string, values []string) string {
	parts := make([]string, len(values))
	for i, v := range values {
		parts[i] = regexp.QuoteMeta(v)
	}
	return label + "=~" + quote(strings.Join(parts, "|"))
}

// quote writes s as a PromQL double-quoted string: every byte that could
// end or escape it is escaped, so a resource name can never change the
// query.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
