// Package model is the one vocabulary of Trellis's observability views
// (issue 14): what `trellis stat`, `routes`, `edges`, `top`, the dashboard
// and the Grafana dashboards show, independent of where the figures come
// from. A Source answers the views; there are two: Prometheus (PromQL over
// the proxies' metrics, on Kubernetes: viz/prom) and the proxies scraped
// directly (local mode, `trellis demo`: viz/scrape). A Tapper streams live
// requests (the aggregated tap API on Kubernetes, the local controller in
// local mode).
//
// Views are label-driven: a row is keyed by Resource, and later labels
// (policy, route) are new fields, never new views.
package model

import (
	"context"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Resource names a Kubernetes object kubectl-style. Kind is the plural
// resource as kubectl spells it ("deployments", "pods", "namespaces",
// "services", "statefulsets", "daemonsets", "jobs"); in local mode Kind is
// "workloads" and Namespace is "".
type Resource struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// Golden are the golden signals of a set of requests over Window.
// A figure that has no requests to come from is nil (JSON null), never 0.
type Golden struct {
	// Requests is how many responses finished in the window.
	Requests float64 `json:"requests"`
	// RPS is Requests per second of the window.
	RPS float64 `json:"rps"`
	// SuccessRate in [0, 1]: responses classified success / all.
	SuccessRate *float64 `json:"successRate"`
	// Latency quantiles, milliseconds.
	P50Ms *float64 `json:"p50Ms"`
	P95Ms *float64 `json:"p95Ms"`
	P99Ms *float64 `json:"p99Ms"`
	// TCPConns is the number of open TCP connections (inbound), nil when
	// the source cannot tell.
	TCPConns *float64 `json:"tcpConnections,omitempty"`
}

// WorkloadStat is one row of `trellis stat`.
type WorkloadStat struct {
	Resource Resource `json:"resource"`
	// MeshedPods of TotalPods run a Trellis proxy (TotalPods 0 in local
	// mode when unknown).
	MeshedPods int `json:"meshedPods"`
	TotalPods  int `json:"totalPods"`
	Golden
}

// Edge is one source -> destination pair (`trellis edges`).
type Edge struct {
	Src Resource `json:"src"`
	// Dst is the destination workload when known, else Kind "services"
	// with the authority's service name.
	Dst         Resource `json:"dst"`
	SrcIdentity string   `json:"srcIdentity"`
	DstIdentity string   `json:"dstIdentity"`
	// MTLS: every request of the edge went over mesh mTLS with a verified
	// server identity.
	MTLS bool `json:"mtls"`
	Golden
}

// Directions of a RouteStat: which proxy's metrics it comes from.
const (
	// DirectionInbound: the requests Resource served, from its own proxy.
	// Routes are applied by the client's proxy, so Route is "[default]".
	DirectionInbound = "inbound"
	// DirectionOutbound: the requests Resource sent, from its own proxy:
	// per route rule that matched them (an HTTPRoute or GRPCRoute whose
	// parent is a Service), or "[default]", every request to Authority.
	DirectionOutbound = "outbound"
)

// RouteStat is one row of `trellis routes`: Route "[default]" when no
// route is known (see Direction).
type RouteStat struct {
	Resource Resource `json:"resource"`
	// Direction is DirectionInbound or DirectionOutbound.
	Direction string `json:"direction"`
	// Route is "namespace/name" of an HTTPRoute or GRPCRoute, or
	// "[default]".
	Route string `json:"route"`
	// Rule is the index of the route's rule (spec.rules, from "0"); ""
	// for "[default]".
	Rule string `json:"rule,omitempty"`
	// Authority the requests were for: the Service a client named
	// (outbound) or that the resource served (inbound).
	Authority string `json:"authority,omitempty"`
	// Backend the route's rule sent the requests to (Authority when the
	// rule has no backendRefs); "" for "[default]".
	Backend string `json:"backend,omitempty"`
	Golden
}

// Query selects what a view covers.
type Query struct {
	// Resource: Kind (required) and optionally Namespace ("" = all) and
	// Name ("" = every object of Kind).
	Resource Resource
	// From/To restrict to traffic from/to this resource (Kind "" = any).
	From, To Resource
	// Window the rates and quantiles are computed over (default 1m).
	Window time.Duration
}

// Source answers the views. Implementations: viz/prom, viz/scrape.
type Source interface {
	Stat(ctx context.Context, q Query) ([]WorkloadStat, error)
	Edges(ctx context.Context, q Query) ([]Edge, error)
	Routes(ctx context.Context, q Query) ([]RouteStat, error)
}

// TapRequest is one tap: the target (a whole namespace when Kind is
// "namespaces") and what the proxies are asked (apiv1.ObserveRequest: the
// match, rate, sampling, header names, bodies).
type TapRequest struct {
	Target  Resource
	Observe *apiv1.ObserveRequest
}

// Tapper streams tap events until ctx ends, the request's limit is
// reached, or fn returns an error (returned as is). Events carry pod and
// namespace.
type Tapper interface {
	Tap(ctx context.Context, req TapRequest, fn func(*apiv1.TapEvent) error) error
}
