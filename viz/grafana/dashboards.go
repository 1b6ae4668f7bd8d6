package grafana

import (
	"fmt"
	"slices"
)

// The PromQL building blocks (docs/metrics.md; docs/observability.md
// documents the same expressions for `trellis stat`).
const (
	rateWindow = "[$__rate_interval]"
	responses  = "trellis_responses_total"
	requests   = "trellis_requests_total"
	latency    = "trellis_response_latency_seconds_bucket"
	// The outbound route metrics (docs/metrics.md#routes): per route,
	// rule, service (the parent, as callers name it) and backend.
	routeRequests = "trellis_route_requests_total"
	routeLatency  = "trellis_route_response_latency_seconds_bucket"
)

// rate sums the per-second rate of metric{s} by the given labels.
func rate(metric, s, by string) string {
	if by == "" {
		return fmt.Sprintf("sum(rate(%s%s%s))", metric, s, rateWindow)
	}
	return fmt.Sprintf("sum by (%s) (rate(%s%s%s))", by, metric, s, rateWindow)
}

// successRate is success / (success + failure): cancelled requests are
// neither (docs/metrics.md#cancelled-requests).
func successRate(pairs []string, by string) string {
	ok := sel(append(pairs, "classification", "success")...)
	all := sel(append(pairs, "classification", "~success|failure")...)
	return rate(responses, ok, by) + "\n/\n" + rate(responses, all, by)
}

func quantile(q float64, pairs []string, by string) string {
	return fmt.Sprintf("histogram_quantile(%g, %s)", q, rate(latency, sel(pairs...), joinBy("le", by)))
}

func joinBy(a, b string) string {
	if b == "" {
		return a
	}
	return a + ", " + b
}

// wl is the series of the chosen workload.
var wl = []string{LabelNamespace, "$namespace", LabelWorkload, "$workload"}

func with(base []string, pairs ...string) []string {
	return append(append([]string(nil), base...), pairs...)
}

// Specs are the four dashboards.
func Specs() []Dashboard {
	return []Dashboard{build(mesh()), build(workload()), build(route()), build(controlPlane())}
}

func mesh() dashSpec {
	in := []string{"direction", "inbound", LabelNamespace, "~$namespace"}
	byWL := LabelNamespace + ", " + LabelWorkload
	legend := "{{" + LabelNamespace + "}}/{{" + LabelWorkload + "}}"
	return dashSpec{uid: "trellis-mesh", title: "Trellis / Mesh",
		desc: "Every meshed workload's golden signals, as its own proxy counts the requests it serves (inbound).",
		vars: []Variable{queryVar("namespace", "Namespace", "label_values("+requests+", "+LabelNamespace+")", true)},
		panels: []panelSpec{
			{title: "Requests per second", kind: "stat", unit: "reqps", targets: []targetSpec{{rate(responses, sel(in...), ""), "rps"}}},
			{title: "Success rate", kind: "stat", unit: "percentunit", targets: []targetSpec{{successRate(in, ""), "success"}}},
			{title: "p99 latency", kind: "stat", unit: "s", targets: []targetSpec{{quantile(0.99, in, ""), "p99"}}},
			{title: "Meshed pods", kind: "stat", unit: "none", desc: "Pods whose proxy holds a valid workload certificate.",
				targets: []targetSpec{{"count(" + "trellis_identity_cert_valid" + sel(LabelNamespace, "~$namespace") + " == 1)", "pods"}}},
			{title: "Requests per second by workload", kind: "timeseries", unit: "reqps", targets: []targetSpec{{rate(responses, sel(in...), byWL), legend}}},
			{title: "Success rate by workload", kind: "timeseries", unit: "percentunit", targets: []targetSpec{{successRate(in, byWL), legend}}},
			{title: "p95 latency by workload", kind: "timeseries", unit: "s", targets: []targetSpec{{quantile(0.95, in, byWL), legend}}},
			{title: "Share of outbound requests over mTLS", kind: "timeseries", unit: "percentunit",
				desc: "Requests sent to a peer that proved its identity over mesh TLS, of all requests sent.",
				targets: []targetSpec{{rate(requests, sel("direction", "outbound", "tls", "true", LabelNamespace, "~$namespace"), byWL) + "\n/\n" +
					rate(requests, sel("direction", "outbound", LabelNamespace, "~$namespace"), byWL), legend}}},
			{title: "Authorization denials by reason", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate("trellis_inbound_authz_deny_total", sel(LabelNamespace, "~$namespace"), byWL+", reason"), legend + " {{reason}}"}}},
			{title: "Open inbound TCP connections", kind: "timeseries", unit: "none",
				targets: []targetSpec{{"sum by (" + byWL + ") (trellis_tcp_open_connections" + sel(in...) + ")", legend}}},
		}}
}

func workload() dashSpec {
	in, out := with(wl, "direction", "inbound"), with(wl, "direction", "outbound")
	return dashSpec{uid: "trellis-workload", title: "Trellis / Workload",
		desc: "One workload: what it serves (inbound), what it calls (outbound, by destination), its proxy's errors and identity.",
		vars: []Variable{
			queryVar("namespace", "Namespace", "label_values("+requests+", "+LabelNamespace+")", false),
			queryVar("workload", "Workload", "label_values("+requests+`{`+LabelNamespace+`="$namespace"}, `+LabelWorkload+")", false),
		},
		panels: []panelSpec{
			{title: "Inbound requests per second", kind: "stat", unit: "reqps", targets: []targetSpec{{rate(responses, sel(in...), ""), "rps"}}},
			{title: "Inbound success rate", kind: "stat", unit: "percentunit", targets: []targetSpec{{successRate(in, ""), "success"}}},
			{title: "Inbound p95 latency", kind: "stat", unit: "s", targets: []targetSpec{{quantile(0.95, in, ""), "p95"}}},
			{title: "Pods", kind: "stat", unit: "none", targets: []targetSpec{{"count(trellis_identity_cert_valid" + sel(wl...) + ")", "pods"}}},
			{title: "Inbound latency", kind: "timeseries", unit: "s", targets: []targetSpec{
				{quantile(0.5, in, ""), "p50"}, {quantile(0.95, in, ""), "p95"}, {quantile(0.99, in, ""), "p99"}}},
			{title: "Inbound responses by status", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate(responses, sel(in...), "status_code, classification"), "{{status_code}} {{classification}}"}}},
			{title: "Outbound requests per second by destination", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate(responses, sel(out...), "dst_service"), "{{dst_service}}"}}},
			{title: "Outbound success rate by destination", kind: "timeseries", unit: "percentunit",
				targets: []targetSpec{{successRate(out, "dst_service"), "{{dst_service}}"}}},
			{title: "Requests the proxy answered itself, by reason", kind: "timeseries", unit: "reqps",
				desc: "docs/proxy.md#errors-the-proxy-answers", targets: []targetSpec{{rate("trellis_request_errors_total", sel(wl...), "direction, reason"), "{{direction}} {{reason}}"}}},
			{title: "Retries by reason", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate("trellis_retries_total", sel(wl...), "reason"), "{{reason}}"}}},
			{title: "TCP bytes per second", kind: "timeseries", unit: "Bps", targets: []targetSpec{
				{rate("trellis_tcp_read_bytes_total", sel(wl...), "direction"), "read {{direction}}"},
				{rate("trellis_tcp_write_bytes_total", sel(wl...), "direction"), "written {{direction}}"}}},
			{title: "Certificate expires in", kind: "timeseries", unit: "s",
				targets: []targetSpec{{"min by (" + LabelPod + ") (trellis_identity_cert_expiry_timestamp_seconds" + sel(wl...) + ") - time()", "{{" + LabelPod + "}}"}}},
		}}
}

func route() dashSpec {
	to := []string{"direction", "outbound", "dst_service", "$dst_service"}
	return dashSpec{uid: "trellis-route", title: "Trellis / Route",
		desc: "One destination as its callers name it (dst_service: the authority of the request), seen by every client proxy; the outbound routes (HTTPRoute/GRPCRoute attached to it) their proxies matched, per route, rule and backend; and the inbound routes' authorization decisions of its namespace.",
		vars: []Variable{
			queryVar("dst_service", "Destination", "label_values("+requests+`{direction="outbound"}, dst_service)`, false),
			queryVar("namespace", "Namespace (inbound routes)", "label_values(trellis_inbound_authz_allow_total, "+LabelNamespace+")", true),
		},
		panels: slices.Concat([]panelSpec{
			{title: "Requests per second", kind: "stat", unit: "reqps", targets: []targetSpec{{rate(responses, sel(to...), ""), "rps"}}},
			{title: "Success rate", kind: "stat", unit: "percentunit", targets: []targetSpec{{successRate(to, ""), "success"}}},
			{title: "p99 latency", kind: "stat", unit: "s", targets: []targetSpec{{quantile(0.99, to, ""), "p99"}}},
			{title: "Endpoints known", kind: "stat", unit: "none", desc: "As the client proxies' Destination answers hold them (max over proxies).",
				targets: []targetSpec{{"max(trellis_endpoints" + sel("dst_service", "$dst_service") + ")", "endpoints"}}},
			{title: "Requests per second by caller", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate(responses, sel(to...), LabelNamespace+", "+LabelWorkload), "{{" + LabelNamespace + "}}/{{" + LabelWorkload + "}}"}}},
			{title: "Latency", kind: "timeseries", unit: "s", targets: []targetSpec{
				{quantile(0.5, to, ""), "p50"}, {quantile(0.95, to, ""), "p95"}, {quantile(0.99, to, ""), "p99"}}},
			{title: "Responses by status", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate(responses, sel(to...), "status_code, grpc_status, classification"), "{{status_code}} {{grpc_status}} {{classification}}"}}},
			{title: "Served by (peer identity, mTLS)", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate(requests, sel(to...), "peer_identity, tls"), "{{peer_identity}} tls={{tls}}"}}},
		}, routePanels(), []panelSpec{
			{title: "Inbound route decisions: allowed", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate("trellis_inbound_authz_allow_total", sel(LabelNamespace, "~$namespace"), "server, route, authz"), "{{server}} {{route}} by {{authz}}"}}},
			{title: "Inbound route decisions: denied", kind: "timeseries", unit: "reqps",
				targets: []targetSpec{{rate("trellis_inbound_authz_deny_total", sel(LabelNamespace, "~$namespace"), "server, route, reason"), "{{server}} {{route}} {{reason}}"}}},
		})}
}

// routePanels are the outbound routes (GAMMA) of the chosen destination:
// the rules its callers' proxies matched, per route, rule and backend. A
// success is a status class other than 5xx and 0xx (the route metrics
// carry no gRPC status); cancelled requests are neither.
func routePanels() []panelSpec {
	svc := []string{"direction", "outbound", "service", "$dst_service"}
	counted := with(svc, "status_class", "!cancelled")
	ok := with(svc, "status_class", "!~5xx|0xx|cancelled")
	by := "route, rule, dst_service"
	legend := "{{route}} rule {{rule}} -> {{dst_service}}"
	q := func(p float64) string {
		return fmt.Sprintf("histogram_quantile(%g, %s)", p, rate(routeLatency, sel(svc...), joinBy("le", by)))
	}
	const desc = "Requests an HTTPRoute or GRPCRoute attached to this Service matched, as the callers' proxies count them (trellis_route_*): per route, rule (its index in spec.rules) and the backend the rule picked."
	return []panelSpec{
		{title: "Outbound routes: requests per second by route, rule and backend", kind: "timeseries", unit: "reqps", desc: desc,
			targets: []targetSpec{{rate(routeRequests, sel(counted...), by), legend}}},
		{title: "Outbound routes: success rate by route, rule and backend", kind: "timeseries", unit: "percentunit", desc: desc,
			targets: []targetSpec{{rate(routeRequests, sel(ok...), by) + "\n/\n" + rate(routeRequests, sel(counted...), by), legend}}},
		{title: "Outbound routes: latency by route, rule and backend", kind: "timeseries", unit: "s", desc: desc, targets: []targetSpec{
			{q(0.5), "p50 " + legend}, {q(0.95), "p95 " + legend}, {q(0.99), "p99 " + legend}}},
	}
}

func controlPlane() dashSpec {
	c := []string{LabelWorkload, "trellis-controller"}
	byPod := LabelPod
	podLegend := "{{" + LabelPod + "}}"
	return dashSpec{uid: "trellis-control-plane", title: "Trellis / Control plane",
		desc: "The controller replicas (identity, destination, policy) and how the proxies see them.",
		panels: []panelSpec{
			{title: "Controller replicas up", kind: "stat", unit: "none", targets: []targetSpec{{"count(trellis_controller_issuer_valid" + sel(c...) + ")", "replicas"}}},
			{title: "Issuer expires in", kind: "stat", unit: "s", targets: []targetSpec{{"min(trellis_controller_issuer_expiry_timestamp_seconds" + sel(c...) + ") - time()", "issuer"}}},
			{title: "Trust anchor expires in", kind: "stat", unit: "s", targets: []targetSpec{{"min(trellis_controller_anchor_expiry_timestamp_seconds" + sel(c...) + ") - time()", "anchor"}}},
			{title: "Proxies disconnected from the controller", kind: "stat", unit: "none",
				desc:    "Proxy streams (by service) not healthy now: count of trellis_control_plane_connected == 0.",
				targets: []targetSpec{{"count(trellis_control_plane_connected == 0) or vector(0)", "disconnected"}}},
			{title: "Certificates issued per second", kind: "timeseries", unit: "ops",
				targets: []targetSpec{{rate("trellis_controller_certificates_issued_total", sel(c...), byPod), podLegend}}},
			{title: "Certify refusals by reason", kind: "timeseries", unit: "ops",
				targets: []targetSpec{{rate("trellis_controller_certificates_refused_total", sel(c...), "reason"), "{{reason}}"}}},
			{title: "Open streams", kind: "timeseries", unit: "none", targets: []targetSpec{
				{"sum by (" + byPod + ") (trellis_controller_destination_streams" + sel(c...) + ")", "destination " + podLegend},
				{"sum by (" + byPod + ") (trellis_controller_policy_streams" + sel(c...) + ")", "policy " + podLegend},
				{"sum by (" + byPod + ") (trellis_controller_route_streams" + sel(c...) + ")", "routes " + podLegend}}},
			{title: "Destination updates sent", kind: "timeseries", unit: "ops",
				targets: []targetSpec{{rate("trellis_controller_destination_updates_total", sel(c...), "kind"), "{{kind}}"}}},
			{title: "Policy streams refused", kind: "timeseries", unit: "ops",
				targets: []targetSpec{{rate("trellis_controller_policy_streams_refused_total", sel(c...), "reason"), "{{reason}}"}}},
			{title: "Proxies' control-plane stream errors", kind: "timeseries", unit: "ops",
				targets: []targetSpec{{rate("trellis_control_plane_stream_errors_total", "", "service"), "{{service}}"}}},
			{title: "Controller memory", kind: "timeseries", unit: "bytes",
				targets: []targetSpec{{"process_resident_memory_bytes" + sel(c...), podLegend}}},
			{title: "Controller goroutines", kind: "timeseries", unit: "none",
				targets: []targetSpec{{"go_goroutines" + sel(c...), podLegend}}},
		}}
}
