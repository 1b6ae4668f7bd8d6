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
	"k8s.io/client-go/tools/cache"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned"
	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/status"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// Kinds in status keys ("Kind/namespace/name").
const (
	kindServer    = "Server"
	kindAuthz     = "AuthorizationPolicy"
	kindRateLimit = "RateLimit"
)

// StatusWriter keeps the Accepted and ResolvedRefs conditions of every
// policy object true to what policymodel does with it. It writes only
// when a condition differs from the one stored, so resyncs and restarts
// write nothing.
type StatusWriter struct {
	client versioned.Interface
	src    *Source // the caches, read only
	queue  *status.Queue
	writes atomic.Int64
	log    *slog.Logger
	// Metrics, when set before Run, counts the writes.
	Metrics *status.Metrics
}

// NewStatusWriter registers its handlers on the informers of src (the
// policy kinds of f, the pods, the routes); start them, then Run the
// writer (on the leader only).
func NewStatusWriter(client versioned.Interface, f policyinformers.SharedInformerFactory, src *Source, pods, services cache.SharedIndexInformer, gw gwinformers.SharedInformerFactory, log *slog.Logger) (*StatusWriter, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := f.Policy().V1alpha1()
	w := &StatusWriter{client: client, src: src, log: log}
	w.queue = status.NewQueue("policy-status", w.sync, log)
	handlers := []handler{
		// A Server's arrival or removal changes the other Servers'
		// conflicts and its policies' and limits' verdicts.
		{p.Servers().Informer(), func(ns, _ string) { w.enqueueNamespace(ns, true, true, true) }},
		{p.AuthorizationPolicies().Informer(), func(ns, name string) { w.queue.Add(key(kindAuthz, ns, name)) }},
		// One RateLimit's arrival can make another one a conflict.
		{p.RateLimits().Informer(), func(ns, _ string) { w.enqueueNamespace(ns, false, false, true) }},
	}
	if gw != nil {
		// A route's parents decide whether a policy targeting it resolves.
		routes := func(ns, _ string) { w.enqueueNamespace(ns, false, true, false) }
		handlers = append(handlers, handler{gw.Gateway().V1().HTTPRoutes().Informer(), routes},
			handler{gw.Gateway().V1().GRPCRoutes().Informer(), routes})
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(enqueueHandler(h.enqueue)); err != nil {
			return nil, fmt.Errorf("status handler: %w", err)
		}
	}
	if services != nil {
		// A Service's arrival or removal resolves a RateLimit on it.
		limits := func(ns, _ string) { w.enqueueNamespace(ns, false, false, true) }
		if _, err := services.AddEventHandler(serviceHandler(limits)); err != nil {
			return nil, fmt.Errorf("status service handler: %w", err)
		}
	}
	// Pods decide Server conflicts (two Servers on one pod and port).
	servers := enqueueHandler(func(ns, _ string) { w.enqueueNamespace(ns, true, false, false) })
	_, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: servers.AddFunc, DeleteFunc: servers.DeleteFunc,
		UpdateFunc: func(old, obj any) {
			if podPolicyChanged(old, obj) {
				servers.OnUpdate(old, obj)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("status pod handler: %w", err)
	}
	return w, nil
}

type handler struct {
	inf     cache.SharedIndexInformer
	enqueue func(ns, name string)
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

// serviceHandler calls enqueue when a Service comes or goes (its
// updates, most of them, change no RateLimit's verdict).
func serviceHandler(enqueue func(ns, name string)) cache.ResourceEventHandlerFuncs {
	h := enqueueHandler(enqueue)
	return cache.ResourceEventHandlerFuncs{AddFunc: h.AddFunc, DeleteFunc: h.DeleteFunc}
}

func (w *StatusWriter) enqueueNamespace(ns string, servers, authz, limits bool) {
	o := w.src.objects(ns)
	if servers {
		for _, s := range o.Servers {
			w.queue.Add(key(kindServer, ns, s.Name))
		}
	}
	if authz {
		for _, ap := range o.Authz {
			w.queue.Add(key(kindAuthz, ns, ap.Name))
		}
	}
	if limits {
		for _, rl := range o.RateLimits {
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

// sync brings one object's conditions up to date.
func (w *StatusWriter) sync(ctx context.Context, k string) error {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 {
		return nil // not a key of ours: nothing to retry
	}
	kind, ns, name := parts[0], parts[1], parts[2]
	o := w.src.objects(ns)
	pc := w.client.PolicyV1alpha1()
	switch kind {
	case kindServer:
		s, err := w.src.servers.Servers(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		v := policymodel.AcceptServer(s, o.Servers, w.src.namespacePods(ns))
		return update(w, s, &s.Status, v, func(c *policyv1.Server) error {
			_, err := pc.Servers(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	case kindAuthz:
		ap, err := w.src.authz.AuthorizationPolicies(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		v := policymodel.AcceptAuthorizationPolicy(ap, o, w.src.trustDomain)
		return update(w, ap, &ap.Status, v, func(c *policyv1.AuthorizationPolicy) error {
			_, err := pc.AuthorizationPolicies(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
			return err
		})
	case kindRateLimit:
		rl, err := w.src.limits.RateLimits(ns).Get(name)
		if err != nil {
			return ignoreNotFound(err)
		}
		v := policymodel.AcceptRateLimit(rl, o.Servers, o.RateLimits, w.src.trustDomain, w.src.serviceExists)
		return update(w, rl, &rl.Status, v, func(c *policyv1.RateLimit) error {
			_, err := pc.RateLimits(ns).UpdateStatus(ctx, c, metav1.UpdateOptions{})
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
func update[T any, P object[T]](w *StatusWriter, obj P, st *policyv1.Status, v policymodel.Verdict, write func(P) error) error {
	conds := append([]metav1.Condition(nil), st.Conditions...)
	changed := false
	for _, c := range conditions(v, obj.GetGeneration()) {
		changed = meta.SetStatusCondition(&conds, c) || changed
	}
	if !changed {
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
	w.log.Info("status written", "kind", fmt.Sprintf("%T", obj), "namespace", obj.GetNamespace(), "name", obj.GetName(), "accepted", v.Accepted.OK, "reason", v.Accepted.Reason)
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
