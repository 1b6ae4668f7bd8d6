// Package routes is the Kubernetes side of the Gateway API's mesh routes
// (GAMMA): HTTPRoutes and GRPCRoutes whose parent is a Service, read from
// shared informers and translated by internal/routemodel into the routes
// Destination.GetRoutes streams (a destination.Routes), and their status
// written back (StatusWriter).
package routes

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

// Index names of the route informers.
const (
	// IndexParent indexes routes by "namespace/name" of each Service
	// parent.
	IndexParent = "trellis.io/service-parent"
	// IndexBackend indexes routes by "namespace/name" of each Service a
	// backendRef or mirror names.
	IndexBackend = "trellis.io/service-backend"
)

// Source answers the routes of a service port (a destination.Routes).
// The answer for Service ns/name may change when a route naming it as a
// parent, the Service, a Service one of those routes sends to, or a
// ReferenceGrant changes: all notify the topic "svc/ns/name".
type Source struct {
	services cache.Indexer
	http     cache.SharedIndexInformer
	grpc     cache.SharedIndexInformer
	grants   gwlisters.ReferenceGrantLister // nil: not served, no cross-namespace backend
	topics   *notify.Topics
	domain   string
	synced   []cache.InformerSynced
}

var (
	_ destination.Routes = (*Source)(nil)
	_ routemodel.Lookup  = (*Source)(nil)
)

// Options configure a Source.
type Options struct {
	// ClusterDomain names backends (default cluster.local).
	ClusterDomain string
	// Grants: ReferenceGrants are served (their informer is in the
	// factory); false refuses every cross-namespace backend.
	Grants bool
}

// New makes the source over the shared Service informer and the Gateway
// API informers of gw; start both and wait for HasSynced before serving.
func New(services cache.SharedIndexInformer, gw gwinformers.SharedInformerFactory, opts Options) (*Source, error) {
	g := gw.Gateway().V1()
	s := &Source{
		services: services.GetIndexer(), http: g.HTTPRoutes().Informer(), grpc: g.GRPCRoutes().Informer(),
		topics: notify.NewTopics(), domain: opts.ClusterDomain,
	}
	if s.domain == "" {
		s.domain = "cluster.local"
	}
	for _, inf := range []cache.SharedIndexInformer{s.http, s.grpc} {
		if err := inf.AddIndexers(cache.Indexers{IndexParent: parentKeys, IndexBackend: backendKeys}); err != nil {
			return nil, fmt.Errorf("route indexers: %w", err)
		}
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{s.http, routeHandler(s.notifyParents)},
		{s.grpc, routeHandler(s.notifyParents)},
		{services, objectHandler(func(ns, name string) { s.notifyService(ns + "/" + name) })},
	}
	if opts.Grants {
		grants := g.ReferenceGrants()
		s.grants = grants.Lister()
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{grants.Informer(), objectHandler(func(string, string) { s.topics.NotifyAll() })})
	}
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return nil, fmt.Errorf("routes handler: %w", err)
		}
		s.synced = append(s.synced, reg.HasSynced)
	}
	return s, nil
}

// HasSynced reports whether every handler has seen its first list.
func (s *Source) HasSynced() bool {
	for _, ok := range s.synced {
		if !ok() {
			return false
		}
	}
	return true
}

// Routes implements destination.Routes.
func (s *Source) Routes(sp destination.ServicePort, callerNS string) ([]*apiv1.Route, <-chan struct{}, func()) {
	key := sp.Namespace + "/" + sp.Name
	changed, release := s.topics.Acquire(topic(key))
	svc := s.Service(sp.Namespace, sp.Name)
	if svc == nil {
		return nil, changed, release
	}
	in := routemodel.Input{
		Service: svc, Port: int32(sp.Port), CallerNamespace: callerNS,
		Routes: s.routesBy(IndexParent, key), ClusterDomain: s.domain, Lookup: s,
	}
	return routemodel.Config(in, "").GetRoutes(), changed, release
}

// Service implements routemodel.Lookup from the cache.
func (s *Source) Service(ns, name string) *corev1.Service {
	obj, ok, err := s.services.GetByKey(ns + "/" + name)
	if err != nil || !ok {
		return nil
	}
	svc, _ := obj.(*corev1.Service)
	return svc
}

// Granted implements routemodel.Lookup from the cache.
func (s *Source) Granted(kind, fromNS, toNS, toName string) bool {
	if s.grants == nil {
		return false
	}
	gs, err := s.grants.ReferenceGrants(toNS).List(labels.Everything())
	return err == nil && routemodel.GrantAllows(gs, kind, fromNS, toNS, toName)
}

// routesBy returns the routes of an index value, HTTPRoutes first.
func (s *Source) routesBy(index, key string) []routemodel.Route {
	var out []routemodel.Route
	for _, inf := range []cache.SharedIndexInformer{s.http, s.grpc} {
		objs, _ := inf.GetIndexer().ByIndex(index, key)
		for _, o := range objs {
			if r, ok := fromObject(o); ok {
				out = append(out, r)
			}
		}
	}
	return out
}

func fromObject(o any) (routemodel.Route, bool) {
	switch r := o.(type) {
	case *gwv1.HTTPRoute:
		return routemodel.FromHTTP(r), true
	case *gwv1.GRPCRoute:
		return routemodel.FromGRPC(r), true
	}
	return routemodel.Route{}, false
}

func topic(serviceKey string) string { return "svc/" + serviceKey }

// notifyParents wakes the streams of a route's Service parents.
func (s *Source) notifyParents(obj any) {
	if r, ok := fromObject(obj); ok {
		for _, k := range serviceParents(&r) {
			s.topics.Notify(topic(k))
		}
	}
}

// notifyService wakes the streams of a Service (its ports may have
// changed) and of the parents of every route sending to it (a backend
// appearing or going changes whether it resolves).
func (s *Source) notifyService(key string) {
	s.topics.Notify(topic(key))
	for _, r := range s.routesBy(IndexBackend, key) {
		for _, k := range serviceParents(&r) {
			s.topics.Notify(topic(k))
		}
	}
}
