package policy

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/status"
)

// statusWorkers: status writes are rare; two keep one slow write from
// holding up the rest.
const statusWorkers = 2

// Runtime is the policy side of the Kubernetes mode: its informers, the
// Source that answers Policy.WatchInbound and the status writer.
type Runtime struct {
	factory policyinformers.SharedInformerFactory
	Source  *Source
	Status  *StatusWriter
}

// Setup makes the Runtime when the API server serves
// policy.trellis.io/v1alpha1, or returns nil (and no error) when the CRDs
// are not installed: the caller then serves the default policy, as before
// the CRDs existed. Nothing runs until Start.
func Setup(disc discovery.DiscoveryInterface, client versioned.Interface, pods cache.SharedIndexInformer, resync time.Duration, log *slog.Logger) (*Runtime, error) {
	if _, err := disc.ServerResourcesForGroupVersion(policyv1.SchemeGroupVersion.String()); apierrors.IsNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("discover %s: %w", policyv1.SchemeGroupVersion, err)
	}
	f := policyinformers.NewSharedInformerFactory(client, resync)
	src, err := New(pods, f)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sw, err := NewStatusWriter(client, f, log.With("component", "policy-status"))
	if err != nil {
		return nil, err
	}
	return &Runtime{factory: f, Source: src, Status: sw}, nil
}

// Start runs the informers until ctx is done, and the status writer
// whenever the elector says this replica leads.
func (r *Runtime) Start(ctx context.Context, elector status.Elector) {
	r.factory.Start(ctx.Done())
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
func (r *Runtime) Shutdown() { r.factory.Shutdown() }
