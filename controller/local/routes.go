package local

import (
	"sort"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/store"
	"github.com/trellis-mesh/trellis/internal/policymodel"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

var _ destination.Routes = routesSource{}

// routesSource answers GetRoutes from the store file's routes, translated
// by internal/routemodel as the Kubernetes controller's are; every edit
// of the file wakes every stream, which sends only what changed.
type routesSource struct{ st *store.Store }

// Routes implements destination.Routes.
func (s routesSource) Routes(sp destination.ServicePort, callerNS string) ([]*apiv1.Route, <-chan struct{}, func()) {
	cfg, changed := s.st.Current()
	l := storeLookup{cfg}
	svc := l.Service(sp.Namespace, sp.Name)
	if svc == nil {
		return nil, changed, func() {}
	}
	in := routemodel.Input{
		Service: svc, Port: int32(sp.Port), CallerNamespace: callerNS,
		Routes: cfg.Routes.Routes, ClusterDomain: cfg.ClusterDomain, Lookup: l,
	}
	return routemodel.Config(in, "").GetRoutes(), changed, func() {}
}

// storeLookup is routemodel.Lookup over a store file.
type storeLookup struct{ cfg *store.Config }

func (l storeLookup) Service(ns, name string) *corev1.Service {
	si := l.cfg.Service(ns, name)
	if si == nil {
		return nil
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	for p := range si.Ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Port: int32(p)})
	}
	sort.Slice(svc.Spec.Ports, func(i, j int) bool { return svc.Spec.Ports[i].Port < svc.Spec.Ports[j].Port })
	return svc
}

func (l storeLookup) Granted(kind, fromNS, toNS, toName string) bool {
	return routemodel.GrantAllows(l.cfg.Routes.Grants, kind, fromNS, toNS, toName)
}

var _ destination.Limits = limitsSource{}

// limitsSource answers the outbound limits of services from the store
// file's RateLimits on Services, translated by internal/policymodel as the
// Kubernetes controller's are; every edit of the file wakes every stream.
type limitsSource struct{ st *store.Store }

// OutboundLimit implements destination.Limits.
func (s limitsSource) OutboundLimit(sp destination.ServicePort) (*apiv1.OutboundLimit, <-chan struct{}, func()) {
	cfg, changed := s.st.Current()
	return policymodel.ServiceLimit(sp.Namespace, sp.Name, cfg.Policies.RateLimits), changed, func() {}
}
