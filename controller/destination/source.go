package destination

import (
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
)

// Resolution is what a destination names, as a Source sees it now.
type Resolution struct {
	// Endpoints of the destination; Exists false when it names nothing.
	Endpoints Endpoints
	// Service is the canonical authority ("name.ns.svc.<cluster domain>:port")
	// of the service port the destination names, "" when it names none
	// (an unknown name, or a single workload's address). GetRoutes keys
	// route configuration on it.
	Service string
	// Exported: the service is exported to other clusters (a multicluster
	// gateway may pass connections to it); never true of a mirror.
	Exported bool
}

// Source answers what a destination names. The Destination service calls
// Resolve once per stream and again each time changed is closed; a Source
// never keeps per-stream state beyond what release frees, so an idle
// stream costs a channel wait and nothing else.
type Source interface {
	// Resolve returns what a names for a caller in callerNamespace ("" when
	// unknown; a bare "name:port" then names nothing), a channel closed
	// when the answer may have changed, and a release func the caller
	// calls once it stops waiting on the channel. The channel is taken
	// before the answer is computed, so no change between the two is
	// missed. Resolve must be safe for concurrent use and must not block
	// on the network: it reads caches.
	Resolve(a authority.Authority, callerNamespace string) (r Resolution, changed <-chan struct{}, release func())
}

// ServicePort names a service port: what route configuration is keyed on.
type ServicePort struct {
	Namespace, Name string
	Port            uint32
}

// Routes answers the outbound routes of service ports (Gateway API mesh
// routes: internal/routemodel). Like a Source, it reads caches, never
// blocks on the network, and takes the channel before the answer.
type Routes interface {
	// Routes returns the routes of svc for a caller in callerNamespace
	// (consumer routes of that namespace replace the producer routes), a
	// channel closed when they may have changed, and its release func.
	Routes(svc ServicePort, callerNamespace string) (routes []*apiv1.Route, changed <-chan struct{}, release func())
}

// Limits answers the outbound limit of services (a RateLimit whose
// targetRef is the Service: internal/policymodel.ServiceLimit), sent with
// their routes. Like Routes, it reads caches, never blocks on the
// network, and takes the channel before the answer.
type Limits interface {
	// OutboundLimit returns the limit of svc's Service (every port has
	// the same; nil: none), a channel closed when it may have changed, and
	// its release func.
	OutboundLimit(svc ServicePort) (limit *apiv1.OutboundLimit, changed <-chan struct{}, release func())
}

// ParseServicePort reads a canonical service authority
// ("name.ns.svc.<cluster domain>:port", Resolution.Service).
func ParseServicePort(service string) (ServicePort, bool) {
	a, err := authority.Parse(service)
	if err != nil || a.Host == "" {
		return ServicePort{}, false
	}
	labels := strings.SplitN(a.Host, ".", 4)
	if len(labels) < 4 || labels[2] != "svc" || labels[0] == "" || labels[1] == "" {
		return ServicePort{}, false
	}
	return ServicePort{Namespace: labels[1], Name: labels[0], Port: a.Port}, true
}
