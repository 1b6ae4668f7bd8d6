package routes

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/trellis-mesh/trellis/controller/status"
	"github.com/trellis-mesh/trellis/internal/routemodel"
)

// StatusWriter keeps the status.parents entries of Trellis's Service
// parents (controllerName routemodel.ControllerName) true to what the
// translation does with each route: Accepted and ResolvedRefs. Other
// controllers' entries are left as they are; a write happens only when
// an entry changes, so resyncs and restarts write nothing.
type StatusWriter struct {
	client gwversioned.Interface
	src    *Source
	queue  *status.Queue
	writes atomic.Int64
	log    *slog.Logger
	// Metrics, when set before Run, counts the writes.
	Metrics *status.Metrics
}

// NewStatusWriter registers its handlers on src's informers (routes,
// Services, ReferenceGrants); start them, then Run it (on the leader).
func NewStatusWriter(client gwversioned.Interface, src *Source, services cache.SharedIndexInformer, grants cache.SharedIndexInformer, log *slog.Logger) (*StatusWriter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &StatusWriter{client: client, src: src, log: log}
	w.queue = status.NewQueue("route-status", w.sync, log)
	route := func(kind string) cache.ResourceEventHandler {
		return objectHandler(func(ns, name string) { w.queue.Add(kind + "/" + ns + "/" + name) })
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}{
		{src.http, route(routemodel.KindHTTPRoute)},
		{src.grpc, route(routemodel.KindGRPCRoute)},
		// A Service decides the Accepted of the routes it parents and the
		// ResolvedRefs of those sending to it.
		{services, objectHandler(func(ns, name string) {
			w.enqueue(IndexParent, ns+"/"+name)
			w.enqueue(IndexBackend, ns+"/"+name)
		})},
	}
	if grants != nil {
		handlers = append(handlers, struct {
			inf cache.SharedIndexInformer
			h   cache.ResourceEventHandler
		}{grants, objectHandler(func(string, string) { w.enqueueAll() })})
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(h.h); err != nil {
			return nil, fmt.Errorf("route status handler: %w", err)
		}
	}
	return w, nil
}

func (w *StatusWriter) enqueue(index, key string) {
	for _, r := range w.src.routesBy(index, key) {
		w.queue.Add(r.Kind + "/" + r.Meta.Namespace + "/" + r.Meta.Name)
	}
}

// enqueueAll queues every route with a Service parent (a ReferenceGrant
// changed: rare, and any route may send across namespaces).
func (w *StatusWriter) enqueueAll() {
	for _, inf := range []cache.SharedIndexInformer{w.src.http, w.src.grpc} {
		for _, k := range inf.GetIndexer().ListIndexFuncValues(IndexParent) {
			w.enqueue(IndexParent, k)
		}
	}
}

// Run writes status until ctx is done (the leader's term).
func (w *StatusWriter) Run(ctx context.Context, workers int) { w.queue.Run(ctx, workers) }

// Writes is how many status updates were sent.
func (w *StatusWriter) Writes() int64 { return w.writes.Load() }

// Synced is how many keys were synced (written or not).
func (w *StatusWriter) Synced() int64 { return w.queue.Synced() }

// sync brings one route's Service parent entries up to date.
func (w *StatusWriter) sync(ctx context.Context, key string) error {
	kind, rest, _ := strings.Cut(key, "/")
	inf := w.src.http
	if kind == routemodel.KindGRPCRoute {
		inf = w.src.grpc
	}
	obj, ok, err := inf.GetIndexer().GetByKey(rest)
	if err != nil || !ok {
		return err // deleted: nothing to write
	}
	r, ok := fromObject(obj)
	if !ok {
		return nil
	}
	want := routemodel.ParentStatuses(&r, w.src, w.src.domain)
	var err2 error
	switch o := obj.(type) {
	case *gwv1.HTTPRoute:
		err2 = write(ctx, w, r.Kind, o, &o.Status.RouteStatus, want, func(ctx context.Context, c *gwv1.HTTPRoute) error {
			_, err := w.client.GatewayV1().HTTPRoutes(c.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	case *gwv1.GRPCRoute:
		err2 = write(ctx, w, r.Kind, o, &o.Status.RouteStatus, want, func(ctx context.Context, c *gwv1.GRPCRoute) error {
			_, err := w.client.GatewayV1().GRPCRoutes(c.Namespace).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	}
	return err2
}

// route is what write needs of a route kind.
type route[T any] interface {
	*T
	metav1.Object
	DeepCopy() *T
}

// write updates a route's parents when they differ from the cached
// object's; the cached object is never modified (the write goes through
// a deep copy). A conflict is retried by the queue, from a newer cache.
func write[T any, P route[T]](ctx context.Context, w *StatusWriter, kind string, obj P, st *gwv1.RouteStatus,
	want []gwv1.RouteParentStatus, update func(context.Context, P) error) error {
	merged, changed := routemodel.MergeParents(st.Parents, want)
	if !changed {
		return nil
	}
	c := P(obj.DeepCopy())
	setParents(c, merged)
	err := update(ctx, c)
	w.Metrics.Wrote(kind, err)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("update status of %s %s/%s: %w", kind, obj.GetNamespace(), obj.GetName(), err)
	}
	w.writes.Add(1)
	w.log.Info("route status written", "kind", kind, "namespace", obj.GetNamespace(), "name", obj.GetName(), "parents", len(want))
	return nil
}

func setParents(obj any, parents []gwv1.RouteParentStatus) {
	switch o := obj.(type) {
	case *gwv1.HTTPRoute:
		o.Status.Parents = parents
	case *gwv1.GRPCRoute:
		o.Status.Parents = parents
	}
}
