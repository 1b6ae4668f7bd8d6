package policy

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/status"
)

// statusWorkers: status writes are rare; two keep one slow write from
// holding up the rest.
const statusWorkers = 2

// Runtime is the policy side of the Kubernetes mode: its informers, the
// Source that answers Policy.WatchInbound and the status writer.
type Runtime struct {
	factory policyinformers.SharedInformerFactory
	gateway gwinformers.SharedInformerFactory // nil: no routes
	Source  *Source
	Status  *StatusWriter
}

// Config is what Setup needs.
type Config struct {
	Discovery discovery.DiscoveryInterface
	Client    versioned.Interface
	// Gateway reads HTTPRoutes and GRPCRoutes (nil, or the Gateway API
	// not served: no inbound routes).
	Gateway gwversioned.Interface
	// GatewayInformers, when set, is the factory of the routes side
	// (controller/k8s/routes), which has found HTTPRoute and GRPCRoute
	// served: shared so that each route kind is watched once.
	GatewayInformers gwinformers.SharedInformerFactory
	Pods             cache.SharedIndexInformer
	// Services, when set, is the shared Service informer: RateLimits on
	// Services are then checked against it (status).
	Services    cache.SharedIndexInformer
	Resync      time.Duration
	TrustDomain string
	Log         *slog.Logger
}

// Setup makes the Runtime when the API server serves
// policy.trellis.io/v1alpha1, or returns nil (and no error) when the CRDs
// are not installed: the caller then serves the default policy, as before
// the CRDs existed. Nothing runs until Start.
func Setup(cfg Config) (*Runtime, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if ok, err := served(cfg.Discovery, policyv1.SchemeGroupVersion.String(), "servers"); err != nil || !ok {
		return nil, err
	}
	rt := &Runtime{factory: policyinformers.NewSharedInformerFactory(cfg.Client, cfg.Resync)}
	if cfg.GatewayInformers != nil {
		rt.gateway = cfg.GatewayInformers
	} else if cfg.Gateway != nil {
		h, err := served(cfg.Discovery, gwv1.GroupVersion.String(), "httproutes")
		if err != nil {
			return nil, err
		}
		g, err := served(cfg.Discovery, gwv1.GroupVersion.String(), "grpcroutes")
		if err != nil {
			return nil, err
		}
		if h && g {
			rt.gateway = gwinformers.NewSharedInformerFactory(cfg.Gateway, cfg.Resync)
		} else {
			log.Info("the Gateway API's HTTPRoute and GRPCRoute are not served: no inbound routes")
		}
	}
	src, err := New(cfg.Pods, rt.factory, Options{TrustDomain: cfg.TrustDomain, Gateway: rt.gateway, Services: cfg.Services})
	if err != nil {
		return nil, err
	}
	sw, err := NewStatusWriter(cfg.Client, rt.factory, src, cfg.Pods, cfg.Services, rt.gateway, log.With("component", "policy-status"))
	if err != nil {
		return nil, err
	}
	rt.Source, rt.Status = src, sw
	return rt, nil
}

// served reports whether the API server serves resource in groupVersion.
func served(disc discovery.DiscoveryInterface, groupVersion, resource string) (bool, error) {
	rs, err := informers.Served(disc, groupVersion)
	return rs[resource], err
}

// Start runs the informers until ctx is done, and the status writer
// whenever the elector says this replica leads.
func (r *Runtime) Start(ctx context.Context, elector status.Elector) {
	r.factory.Start(ctx.Done())
	if r.gateway != nil {
		r.gateway.Start(ctx.Done())
	}
	go elector.Run(ctx, func(ctx context.Context) {
		// Write only from a full cache: a half-filled one would mark
		// policies whose Server it has not listed yet as TargetNotFound.
		if cache.WaitForCacheSync(ctx.Done(), r.Source.HasSynced) {
			r.Status.Run(ctx, statusWorkers)
		}
	})
}

// HasSynced reports whether the source has seen every first list.
func (r *Runtime) HasSynced() bool { return r.Source.HasSynced() }

// Shutdown waits for the informers to stop; cancel Start's ctx first.
func (r *Runtime) Shutdown() {
	r.factory.Shutdown()
	if r.gateway != nil {
		r.gateway.Shutdown()
	}
}
