package routes

import (
	"context"
	"log/slog"
	"time"

	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwversioned "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/status"
)

// statusWorkers: route status writes are rare.
const statusWorkers = 2

// Runtime is the routes side of the Kubernetes mode: the Gateway API
// informers (Factory, shared with the policy side's inbound routes), the
// Source answering GetRoutes and the status writer.
type Runtime struct {
	Factory gwinformers.SharedInformerFactory
	Source  *Source
	Status  *StatusWriter
}

// Config is what Setup needs.
type Config struct {
	Discovery discovery.DiscoveryInterface
	Client    gwversioned.Interface
	// Services is the shared Service informer.
	Services      cache.SharedIndexInformer
	ClusterDomain string
	Resync        time.Duration
	Log           *slog.Logger
}

// Setup makes the Runtime when the API server serves HTTPRoute and
// GRPCRoute in gateway.networking.k8s.io/v1, or returns nil (and no
// error) when it does not: every service then has no routes.
// ReferenceGrants are read when served; without them a cross-namespace
// backend never resolves.
func Setup(cfg Config) (*Runtime, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	served, err := informers.Served(cfg.Discovery, gwv1.GroupVersion.String())
	if err != nil {
		return nil, err
	}
	if !served["httproutes"] || !served["grpcroutes"] {
		log.Info("the Gateway API's HTTPRoute and GRPCRoute are not served: no routes")
		return nil, nil
	}
	if !served["referencegrants"] {
		log.Info("the Gateway API's ReferenceGrant is not served: cross-namespace backends are refused")
	}
	f := gwinformers.NewSharedInformerFactory(cfg.Client, cfg.Resync)
	src, err := New(cfg.Services, f, Options{ClusterDomain: cfg.ClusterDomain, Grants: served["referencegrants"]})
	if err != nil {
		return nil, err
	}
	var grants cache.SharedIndexInformer
	if served["referencegrants"] {
		grants = f.Gateway().V1().ReferenceGrants().Informer()
	}
	sw, err := NewStatusWriter(cfg.Client, src, cfg.Services, grants, log.With("component", "route-status"))
	if err != nil {
		return nil, err
	}
	return &Runtime{Factory: f, Source: src, Status: sw}, nil
}

// Start runs the informers until ctx is done, and the status writer
// whenever the elector says this replica leads.
func (r *Runtime) Start(ctx context.Context, elector status.Elector) {
	r.Factory.Start(ctx.Done())
	go elector.Run(ctx, func(ctx context.Context) {
		// Write only from a full cache: a half-filled one would mark
		// backends it has not listed yet as BackendNotFound.
		if cache.WaitForCacheSync(ctx.Done(), r.Source.HasSynced) {
			r.Status.Run(ctx, statusWorkers)
		}
	})
}

// HasSynced reports whether the source has seen every first list.
func (r *Runtime) HasSynced() bool { return r.Source.HasSynced() }

// Shutdown waits for the informers to stop; cancel Start's ctx first.
func (r *Runtime) Shutdown() { r.Factory.Shutdown() }
