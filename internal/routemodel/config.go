package routemodel

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Lookup is what the translation reads besides the routes.
type Lookup interface {
	// Service returns the Service ns/name, nil when there is none.
	Service(ns, name string) *corev1.Service
	// Granted reports whether a ReferenceGrant of namespace toNS lets
	// routes of kind in fromNS refer to the Service toName. Without
	// ReferenceGrants (the CRD not served) it is false.
	Granted(kind, fromNS, toNS, toName string) bool
}

// Input is what one answer depends on.
type Input struct {
	// Service and Port are the parent: a service port, by its number.
	Service *corev1.Service
	Port    int32
	// CallerNamespace is the caller's namespace ("" when unknown: only
	// producer routes apply).
	CallerNamespace string
	// Routes are the candidates (any namespace): those attached to the
	// port are kept.
	Routes []Route
	// ClusterDomain names backends ("name.ns.svc.<domain>:port").
	ClusterDomain string
	Lookup        Lookup
}

// MaxConfigBytes bounds the encoded size of one answer, well under gRPC's
// 4 MiB message limit: an answer over it could never reach the proxy. The
// CRDs bound each route (16 rules); this bounds how many a Service
// gathers.
const MaxConfigBytes = 1 << 20

// Config returns the route configuration of in's port for its caller,
// service set to authority. A route not accepted (see Status) is left out;
// past MaxConfigBytes, the rules of the newest routes are (the last in
// precedence order, so an older route is never displaced by a newer).
func Config(in Input, authority string) *apiv1.RouteConfig {
	rc := &apiv1.RouteConfig{Service: authority}
	size := proto.Size(rc)
	for _, r := range Select(in) {
		ann := Annotations(r.Meta.Annotations) // once per route, not per rule
		for i, rule := range r.Rules {
			route := in.rule(r, rule, ann)
			route.Rule = uint32(i)
			n := proto.Size(route) + 8 // field tag and length
			if size+n > MaxConfigBytes {
				return rc
			}
			size += n
			rc.Routes = append(rc.Routes, route)
		}
	}
	return rc
}

// Select returns the accepted routes that apply to in's caller, in
// precedence order: the consumer routes when there is any, else the
// producer routes.
func Select(in Input) []*Route {
	var producer, consumer []*Route
	for i := range in.Routes {
		r := &in.Routes[i]
		if !attaches(r, in.Service, in.Port) || Unsupported(r) != nil {
			continue
		}
		switch r.Meta.Namespace {
		case in.Service.Namespace:
			producer = append(producer, r)
		case in.CallerNamespace:
			consumer = append(consumer, r)
		}
	}
	out := producer
	if len(consumer) > 0 {
		out = consumer
	}
	slices.SortStableFunc(out, order)
	return out
}

// Unsupported returns why a route cannot be served as written (a match
// or filter this version does not know, an expression RE2 refuses), or
// nil. Serving part of it could send requests where its author did not
// mean them to go.
func Unsupported(r *Route) error {
	for i, rule := range r.Rules {
		for j, m := range rule.Matches {
			if m == nil {
				return fmt.Errorf("spec.rules[%d].matches[%d]: a match type this version does not know", i, j)
			}
			if err := checkExpressions(m); err != nil {
				return fmt.Errorf("spec.rules[%d].matches[%d]: %w", i, j, err)
			}
		}
		if err := checkFilters(rule.Filters); err != nil {
			return fmt.Errorf("spec.rules[%d].filters: %w", i, err)
		}
		for j, b := range rule.Backends {
			if err := checkFilters(b.Filters); err != nil {
				return fmt.Errorf("spec.rules[%d].backendRefs[%d].filters: %w", i, j, err)
			}
		}
	}
	return nil
}
