package status

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Lease timings of client-go's defaults for controllers (kube-controller-
// manager's): a dead leader is replaced within about LeaseDuration.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaseElector elects one leader among the controller's replicas with a
// coordination.k8s.io Lease (client-go leaderelection). lead runs only
// while this replica holds the Lease; on losing it, lead's context ends
// and the replica stands for election again.
type LeaseElector struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
	// Identity names this replica in the Lease (the pod name).
	Identity                                  string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Run stands for election until ctx is done.
func (e *LeaseElector) Run(ctx context.Context, lead func(ctx context.Context)) {
	log := e.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	le, err := e.elector(lead, log)
	if err != nil {
		// A configuration error: nothing to retry. Never lead rather
		// than let two replicas write.
		log.Error("leader election disabled; this replica writes no status", "err", err)
		return
	}
	for ctx.Err() == nil {
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
}

func (e *LeaseElector) elector(lead func(ctx context.Context), log *slog.Logger) (*leaderelection.LeaderElector, error) {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
		Client:     e.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   or(e.LeaseDuration, DefaultLeaseDuration),
		RenewDeadline:   or(e.RenewDeadline, DefaultRenewDeadline),
		RetryPeriod:     or(e.RetryPeriod, DefaultRetryPeriod),
		ReleaseOnCancel: true, // a clean stop hands over at once
		Name:            e.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				log.Info("leading: writing status", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
				lead(ctx)
			},
			OnStoppedLeading: func() { log.Info("not leading", "lease", e.Namespace+"/"+e.Name, "identity", e.Identity) },
		},
	})
	if err != nil {
		return nil, fmt.Errorf("leader election %s/%s: %w", e.Namespace, e.Name, err)
	}
	return le, nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
