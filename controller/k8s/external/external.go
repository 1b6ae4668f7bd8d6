// Package external makes Services select ExternalWorkloads
// (workload.trellis.io, docs/external-workloads.md): for every Service
// whose selector matches ExternalWorkloads of its namespace it writes
// EndpointSlices (managed by ManagedBy, owned by the Service) of their
// addresses, ready once the workload is certified, beside the slices the
// EndpointSlice controller writes for its pods. The destination source
// answers these endpoints with the workload's identity.
//
// The shape is client-go's sample-controller: the shared informers ->
// rate-limited workqueue of Services -> sync, writing only what differs.
// Run it on the leading replica only.
package external

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/k8s/epslice"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
)

// Config configures a Controller.
type Config struct {
	// Client writes the slices (create, update, delete EndpointSlices).
	Client kubernetes.Interface
	// Cache is the shared informer cache, with ExternalWorkloads watched
	// (informers.Cache.WatchExternalWorkloads).
	Cache      *informers.Cache
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Controller keeps the ExternalWorkload slices of every Service.
type Controller struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
}

const fieldManager = "trellis-external-workloads"

// New makes a Controller; Run starts it.
func New(cfg Config) (*Controller, error) {
	if cfg.Client == nil || cfg.Cache == nil || cfg.Cache.ExternalWorkloads == nil {
		return nil, errors.New("external: Client and a Cache watching ExternalWorkloads are required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Controller{cfg: cfg, log: log, metrics: m}, nil
}

// Run syncs until ctx ends (leadership lost, or the controller stops).
// Its handlers go with it: a replica that does not lead does no work.
func (c *Controller) Run(ctx context.Context, workers int) {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "external-workloads"})
	defer q.ShutDown()
	regs, err := c.handle(q)
	defer func() {
		for inf, r := range regs {
			_ = inf.RemoveEventHandler(r)
		}
		c.metrics.reset()
	}()
	if err != nil {
		c.log.Error("external workloads not synced", "err", err)
		return
	}
	var synced []cache.InformerSynced
	for _, r := range regs {
		synced = append(synced, r.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for c.next(ctx, q) {
			}
		})
	}
	<-ctx.Done()
	q.ShutDown()
	wg.Wait()
}

// handle registers the handlers that enqueue the Services an event may
// change. Added to running informers, they first see every object.
func (c *Controller) handle(q workqueue.TypedRateLimitingInterface[string]) (map[cache.SharedIndexInformer]cache.ResourceEventHandlerRegistration, error) {
	ic := c.cfg.Cache
	regs := map[cache.SharedIndexInformer]cache.ResourceEventHandlerRegistration{}
	for inf, fn := range map[cache.SharedIndexInformer]func(any){
		ic.Services: func(obj any) {
			if s, ok := obj.(*corev1.Service); ok {
				q.Add(s.Namespace + "/" + s.Name)
			}
		},
		// A slice of ours changed or deleted by hand is put back.
		ic.EndpointSlices: func(obj any) {
			if sl, ok := obj.(*discoveryv1.EndpointSlice); ok && sl.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
				q.Add(sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName])
			}
		},
		// Both the old and the new labels: a Service it leaves loses it.
		ic.ExternalWorkloads: func(obj any) {
			if ew, ok := obj.(*workloadv1.ExternalWorkload); ok {
				for _, s := range c.selecting(ew) {
					q.Add(s)
				}
			}
		},
	} {
		r, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    fn,
			UpdateFunc: func(old, cur any) { fn(old); fn(cur) },
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				fn(obj)
			},
		})
		if err != nil {
			return regs, fmt.Errorf("external: event handler: %w", err)
		}
		regs[inf] = r
	}
	return regs, nil
}

// selecting are the keys of the Services whose selector matches ew.
func (c *Controller) selecting(ew *workloadv1.ExternalWorkload) []string {
	var out []string
	for _, s := range c.cfg.Cache.ServicesIn(ew.Namespace) {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(ew.Labels)) {
			out = append(out, s.Namespace+"/"+s.Name)
		}
	}
	return out
}

func (c *Controller) next(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	key, quit := q.Get()
	if quit {
		return false
	}
	defer q.Done(key)
	if err := c.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			c.log.Warn("external workload slices not synced; retrying", "service", key, "err", err)
			c.metrics.errors.Inc()
		}
		q.AddRateLimited(key)
		return true
	}
	q.Forget(key)
	return true
}

// sync makes the slices of our manager of one Service what its
// ExternalWorkloads say; none once the Service is gone.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // never queued by this package
	}
	var want []*discoveryv1.EndpointSlice
	if svc := c.cfg.Cache.Service(ns, name); svc != nil {
		want = Desired(svc, c.cfg.Cache.ExternalWorkloadsIn(ns))
	}
	var have []*discoveryv1.EndpointSlice
	for _, sl := range c.cfg.Cache.SlicesOf(ns, name) {
		if sl.Labels[discoveryv1.LabelManagedBy] == ManagedBy {
			have = append(have, sl)
		}
	}
	w, err := epslice.Apply(ctx, c.cfg.Client.DiscoveryV1().EndpointSlices(ns), have, want, fieldManager)
	c.metrics.wrote(w)
	if err != nil {
		return fmt.Errorf("service %s: %w", key, err)
	}
	if w != (epslice.Writes{}) {
		c.log.Debug("external workload slices written", "service", key, "created", w.Created, "updated", w.Updated, "deleted", w.Deleted)
	}
	c.metrics.endpoints(key, want)
	return nil
}
