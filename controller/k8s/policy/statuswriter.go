package policy

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	listers "github.com/trellis-mesh/trellis/api/policy/client/listers/policy/v1alpha1"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/status"
)

// Kinds in status keys ("Kind/namespace/name").
const (
	kindServer    = "Server"
	kindAuthz     = "AuthorizationPolicy"
	kindRateLimit = "RateLimit"
)

// StatusWriter keeps the Accepted condition of every policy object true
// to what Translate does with it. It writes only when the condition
// differs from the one stored, so resyncs and restarts write nothing.
type StatusWriter struct {
	client  versioned.Interface
	servers listers.ServerLister
	authz   listers.AuthorizationPolicyLister
	limits  listers.RateLimitLister
	queue   *status.Queue
	writes  atomic.Int64
	log     *slog.Logger
	// Metrics, when set before Run, counts the writes.
	Metrics *status.Metrics
}

// NewStatusWriter registers its handlers on f's policy informers; start f,
// then Run the writer (on the leader only).
func NewStatusWriter(client versioned.Interface, f policyinformers.SharedInformerFactory, log *slog.Logger) (*StatusWriter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := f.Policy().V1alpha1()
	w := &StatusWriter{client: client, servers: p.Servers().Lister(), authz: p.AuthorizationPolicies().Lister(), limits: p.RateLimits().Lister(), log: log}
	w.queue = status.NewQueue("policy-status", w.sync, log)
	for _, h := range []struct {
		inf     cache.SharedIndexInformer
		enqueue func(ns, name string)
	}{
		// A Server's arrival or removal changes its policies' and limits' verdicts.
		{p.Servers().Informer(), func(ns, name string) { w.queue.Add(key(kindServer, ns, name)); w.enqueueNamespace(ns, true, true) }},
		{p.AuthorizationPolicies().Informer(), func(ns, name string) { w.queue.Add(key(kindAuthz, ns, name)) }},
		// One RateLimit's arrival can make another one a conflict.
		{p.RateLimits().Informer(), func(ns, _ string) { w.enqueueNamespace(ns, false, true) }},
	} {
		if _, err := h.inf.AddEventHandler(enqueueHandler(h.enqueue)); err != nil {
			return nil, fmt.Errorf("status handler: %w", err)
		}
	}
	return w, nil
}

func key(kind, ns, name string) string { return kind + "/" + ns + "/" + name }

func enqueueHandler(enqueue func(ns, name string)) cache.ResourceEventHandlerFuncs {
	f := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := meta.Accessor(obj); err == nil {
			enqueue(m.GetNamespace(), m.GetName())
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, obj any) { f(obj) }, DeleteFunc: f}
}

func (w *StatusWriter) enqueueNamespace(ns string, authz, limits bool) {
	if authz {
		aps, _ := w.authz.AuthorizationPolicies(ns).List(labels.Everything())
		for _, ap := range aps {
			w.queue.Add(key(kindAuthz, ns, ap.Name))
		}
	}
	if limits {
		rls, _ := w.limits.RateLimits(ns).List(labels.Everything())
		for _, rl := range rls {
			w.queue.Add(key(kindRateLimit, ns, rl.Name))
		}
	}
}

// Run writes status until ctx is done (the leader's term).
func (w *StatusWriter) Run(ctx context.Context, workers int) { w.queue.Run(ctx, workers) }

// Writes is how many status updates were sent.
func (w *StatusWriter) Writes() int64 { return w.writes.Load() }

// Synced is how many keys were synced (written or not).
func (w *StatusWriter) Synced() int64 { return w.queue.Synced() }

// sync brings one object's Accepted condition up to date.
func (w *StatusWriter) sync(ctx context.Context, k string) error {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 {
		return nil // not a key of ours: nothing to retry
	}
	kind, ns, name := parts[0], parts[1], parts[2]
	servers, err := w.servers.Servers(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	switch kind {
	case kindServer:
		s, err := w.servers.Servers(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return update(ctx, w, s, &s.Status, AcceptServer(s), func(c *policyv1.Server) error {
			_, err := w.client.PolicyV1alpha1().Servers(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	case kindAuthz:
		ap, err := w.authz.AuthorizationPolicies(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		return update(ctx, w, ap, &ap.Status, AcceptAuthorizationPolicy(ap, servers), func(c *policyv1.AuthorizationPolicy) error {
			_, err := w.client.PolicyV1alpha1().AuthorizationPolicies(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	case kindRateLimit:
		rl, err := w.limits.RateLimits(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		limits, err := w.limits.RateLimits(ns).List(labels.Everything())
		if err != nil {
			return err
		}
		return update(ctx, w, rl, &rl.Status, AcceptRateLimit(rl, servers, limits), func(c *policyv1.RateLimit) error {
			_, err := w.client.PolicyV1alpha1().RateLimits(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	}
	return nil
}

// object is what update needs of a policy kind.
type object[T any] interface {
	*T
	metav1.Object
	DeepCopy() *T
}

// update writes the condition when it differs from the cached object's
// (SetStatusCondition keeps the transition time when only the message or
// generation changes, and reports whether anything changed). The cached
// object is never modified: the write goes through a deep copy.
func update[T any, P object[T]](_ context.Context, w *StatusWriter, obj P, st *policyv1.Status, a Accepted, write func(P) error) error {
	conds := append([]metav1.Condition(nil), st.Conditions...)
	if !meta.SetStatusCondition(&conds, a.Condition(obj.GetGeneration())) {
		return nil
	}
	c := P(obj.DeepCopy())
	setConditions(c, conds)
	err := write(c)
	w.Metrics.Wrote(kindOf(obj), err)
	if err != nil {
		return fmt.Errorf("update status of %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	w.writes.Add(1)
	w.log.Info("status written", "kind", fmt.Sprintf("%T", obj), "namespace", obj.GetNamespace(), "name", obj.GetName(), "accepted", a.OK, "reason", a.Reason)
	return nil
}

func setConditions(obj any, conds []metav1.Condition) {
	switch o := obj.(type) {
	case *policyv1.Server:
		o.Status.Conditions = conds
	case *policyv1.AuthorizationPolicy:
		o.Status.Conditions = conds
	case *policyv1.RateLimit:
		o.Status.Conditions = conds
	}
}

func ignoreNotFound(err error) error {
	if apierrors.IsNotFound(err) {
		return nil // deleted: nothing to write
	}
	return err
}
