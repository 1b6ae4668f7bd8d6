package routes

import (
	"maps"
	"slices"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/trellis-mesh/trellis/internal/routemodel"
)

func parentKeys(obj any) ([]string, error) {
	r, ok := fromObject(obj)
	if !ok {
		return nil, nil
	}
	return serviceParents(&r), nil
}

func serviceParents(r *routemodel.Route) []string {
	var out []string
	for _, ref := range r.Parents {
		if k := routemodel.ServiceParentKey(r.Meta.Namespace, ref); k != "" && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// backendKeys are the Services a route sends or mirrors to (any kind of
// reference that names a Service; the translation checks the rest).
func backendKeys(obj any) ([]string, error) {
	r, ok := fromObject(obj)
	if !ok {
		return nil, nil
	}
	var out []string
	add := func(ref gwv1.BackendObjectReference) {
		k := string(routemodel.Deref(ref.Namespace, gwv1.Namespace(r.Meta.Namespace))) + "/" + string(ref.Name)
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	mirrors := func(fs []gwv1.HTTPRouteFilter) {
		for _, f := range fs {
			if f.RequestMirror != nil {
				add(f.RequestMirror.BackendRef)
			}
		}
	}
	for _, rule := range r.Rules {
		mirrors(rule.Filters)
		for _, b := range rule.Backends {
			add(b.Ref.BackendObjectReference)
			mirrors(b.Filters)
		}
	}
	return out, nil
}

// routeHandler calls f with the old and the new object of every event (a
// route leaving a parent must wake that parent's streams too).
func routeHandler(f func(any)) cache.ResourceEventHandlerFuncs {
	g := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		f(obj)
	}
	update := func(old, obj any) {
		if !specChanged(old, obj) {
			return // a status write: the translation reads no status
		}
		g(old)
		g(obj)
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: g, UpdateFunc: update, DeleteFunc: g}
}

// specChanged: the spec (generation) or the annotations (retries,
// faults) of a route changed.
func specChanged(old, obj any) bool {
	a, err1 := meta.Accessor(old)
	b, err2 := meta.Accessor(obj)
	return err1 != nil || err2 != nil || a.GetGeneration() != b.GetGeneration() ||
		!maps.Equal(a.GetAnnotations(), b.GetAnnotations())
}

// objectHandler calls f with the namespace and name of every event's
// object.
func objectHandler(f func(ns, name string)) cache.ResourceEventHandlerFuncs {
	g := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := meta.Accessor(obj); err == nil {
			f(m.GetNamespace(), m.GetName())
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: g, UpdateFunc: func(_, obj any) { g(obj) }, DeleteFunc: g}
}
