// Package destination serves the Destination API: endpoint streams for
// service authorities and workload addresses, computed by a Source (the
// local store in controller/local, or Kubernetes informers in
// controller/k8s/endpoints; the service knows neither) and re-diffed every
// time the Source says the answer may have changed.
package destination

import (
	"log/slog"
	"reflect"
	"sort"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Service implements apiv1.DestinationServer.
type Service struct {
	apiv1.UnimplementedDestinationServer

	// Source answers what a destination names (required).
	Source Source
	// Routes answers the outbound routes of service ports (nil: every
	// service has none, and the proxy uses its defaults).
	Routes Routes
	// Limits answers the outbound limits of services (nil: none).
	Limits  Limits
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Done, when closed, ends every stream with Unavailable so a graceful
	// stop does not wait for clients that never hang up.
	Done <-chan struct{}
}

// ErrShuttingDown is returned to open streams when the controller stops.
var ErrShuttingDown = notify.ErrShuttingDown

// Endpoints is the computed state of one destination.
type Endpoints struct {
	Exists bool
	// Addrs is keyed by "ip:port".
	Addrs  map[string]*apiv1.WeightedAddr
	Labels map[string]string
	// Balancer is the service's balancer annotations, carried by every
	// AddSet (nil: the proxies' defaults).
	Balancer *apiv1.BalancerConfig
}

// Diff returns the updates that take a client from prev to next. first is
// true for the first message of a stream: it is then exactly one update,
// Add with every endpoint or NoEndpoints. Later, Add carries new and
// changed endpoints, Remove gone ones, and NoEndpoints is sent only when
// the set becomes empty (after the Remove) or existence changes while empty.
func Diff(prev, next Endpoints, first bool) []*apiv1.Update {
	if first {
		if len(next.Addrs) == 0 {
			return []*apiv1.Update{noEndpoints(next.Exists)}
		}
		return []*apiv1.Update{add(next, sortedKeys(next.Addrs))}
	}
	var out []*apiv1.Update
	var added []string
	for k, wa := range next.Addrs {
		if old, ok := prev.Addrs[k]; !ok || !proto.Equal(old, wa) || !equalLabels(prev.Labels, next.Labels) || !proto.Equal(prev.Balancer, next.Balancer) {
			added = append(added, k)
		}
	}
	sort.Strings(added)
	var removed []*apiv1.TcpAddress
	for _, k := range sortedKeys(prev.Addrs) {
		if _, ok := next.Addrs[k]; !ok {
			removed = append(removed, prev.Addrs[k].GetAddr())
		}
	}
	// Add before Remove, so a client replacing one endpoint by another is
	// never left with an empty set in between.
	if len(added) > 0 {
		out = append(out, add(next, added))
	}
	if len(removed) > 0 {
		out = append(out, &apiv1.Update{Update: &apiv1.Update_Remove{Remove: &apiv1.RemoveSet{Addrs: removed}}})
	}
	if len(next.Addrs) == 0 && (len(prev.Addrs) > 0 || prev.Exists != next.Exists) {
		out = append(out, noEndpoints(next.Exists))
	}
	return out
}

func add(e Endpoints, keys []string) *apiv1.Update {
	set := &apiv1.AddSet{MetricLabels: e.Labels, Balancer: e.Balancer}
	for _, k := range keys {
		set.Addrs = append(set.Addrs, e.Addrs[k])
	}
	return &apiv1.Update{Update: &apiv1.Update_Add{Add: set}}
}

func noEndpoints(exists bool) *apiv1.Update {
	return &apiv1.Update{Update: &apiv1.Update_NoEndpoints{NoEndpoints: &apiv1.NoEndpoints{Exists: exists}}}
}

func sortedKeys(m map[string]*apiv1.WeightedAddr) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func equalLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// callerNamespace returns the namespace of a caller's SPIFFE ID, or "".
func callerNamespace(caller string) string {
	if id, err := identity.Parse(caller); err == nil {
		return id.Namespace
	}
	return ""
}

// Get streams endpoint updates for req.Path until the client goes away.
func (s *Service) Get(req *apiv1.GetDestination, stream apiv1.Destination_GetServer) error {
	a, err := authority.Parse(req.GetPath())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "path: %v", err)
	}
	ns := callerNamespace(req.GetCallerIdentity())
	s.Metrics.DestinationStreams.Inc()
	defer s.Metrics.DestinationStreams.Dec()
	log := s.Log.With("path", req.GetPath(), "caller", req.GetCallerIdentity())
	log.Debug("destination stream opened")
	src := s.Source
	resolve := func() (Endpoints, <-chan struct{}, func()) {
		r, changed, release := src.Resolve(a, ns)
		if req.GetExportedOnly() {
			return exportedOnly(r), changed, release
		}
		return r.Endpoints, changed, release
	}
	send := func(prev, next Endpoints, first bool) error {
		for _, u := range Diff(prev, next, first) {
			if err := stream.Send(u); err != nil {
				return err
			}
			s.Metrics.DestinationUpdates.WithLabelValues(updateKind(u)).Inc()
		}
		return nil
	}
	err = notify.Watch(stream.Context(), s.Done, resolve, send)
	log.Debug("destination stream closed", "reason", err)
	return err
}

// exportedOnly is what a multicluster gateway may reach of r: nothing
// unless the service is exported, and of its endpoints only the meshed
// ones (a gateway passes mesh TLS through; a plain-text app would receive
// it, or worse, a caller would reach an app the mesh does not front).
func exportedOnly(r Resolution) Endpoints {
	if !r.Exported {
		return Endpoints{Addrs: map[string]*apiv1.WeightedAddr{}, Labels: r.Endpoints.Labels}
	}
	e := r.Endpoints
	e.Addrs = make(map[string]*apiv1.WeightedAddr, len(r.Endpoints.Addrs))
	for k, wa := range r.Endpoints.Addrs {
		if wa.GetTlsIdentity().GetSpiffeId() != "" {
			e.Addrs[k] = wa
		}
	}
	return e
}

func updateKind(u *apiv1.Update) string {
	switch u.GetUpdate().(type) {
	case *apiv1.Update_Add:
		return "add"
	case *apiv1.Update_Remove:
		return "remove"
	}
	return "no_endpoints"
}

// GetRoutes sends the route configuration of a service at once and after
// every change of it: the routes of the service port the path names, for
// the caller's namespace (none for a path that names no service port).
func (s *Service) GetRoutes(req *apiv1.GetDestination, stream apiv1.Destination_GetRoutesServer) error {
	a, err := authority.Parse(req.GetPath())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "path: %v", err)
	}
	ns := callerNamespace(req.GetCallerIdentity())
	s.Metrics.RouteStreams.Inc()
	defer s.Metrics.RouteStreams.Dec()
	resolve := func() (*apiv1.RouteConfig, <-chan struct{}, func()) {
		r, changed, release := s.Source.Resolve(a, ns)
		rc := &apiv1.RouteConfig{Service: a.String()}
		if r.Service == "" {
			return rc, changed, release
		}
		rc.Service = r.Service
		svc, ok := ParseServicePort(r.Service)
		if !ok {
			return rc, changed, release
		}
		chans, releases := []<-chan struct{}{changed}, []func(){release}
		if s.Routes != nil {
			routes, c, rel := s.Routes.Routes(svc, ns)
			rc.Routes, chans, releases = routes, append(chans, c), append(releases, rel)
		}
		if s.Limits != nil {
			lim, c, rel := s.Limits.OutboundLimit(svc)
			rc.Limit, chans, releases = lim, append(chans, c), append(releases, rel)
		}
		if len(chans) == 1 {
			return rc, changed, release
		}
		woke, stop := anyOf(chans...)
		return rc, woke, func() {
			stop()
			for _, rel := range releases {
				rel()
			}
		}
	}
	return notify.Watch(stream.Context(), s.Done, resolve,
		notify.SendChanged(func(a, b *apiv1.RouteConfig) bool { return proto.Equal(a, b) }, stream.Send))
}

// anyOf returns a channel closed when one of chans is (a nil one never
// is), and a func ending the wait; the goroutine lives only while the
// stream waits.
func anyOf(chans ...<-chan struct{}) (<-chan struct{}, func()) {
	out, stop := make(chan struct{}), make(chan struct{})
	cases := make([]reflect.SelectCase, 0, len(chans)+1)
	cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(stop)})
	for _, c := range chans {
		if c != nil {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
		}
	}
	go func() {
		if i, _, _ := reflect.Select(cases); i != 0 {
			close(out)
		}
	}()
	var once sync.Once
	return out, func() { once.Do(func() { close(stop) }) }
}
