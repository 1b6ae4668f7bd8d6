package policy

import (
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gwlisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"

	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	listers "github.com/trellis-mesh/trellis/api/policy/client/listers/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/policymodel"
)

// Source computes the inbound policy of a workload's port from the shared
// informers (a policy.Source): its answer may change whenever a pod or a
// policy object of the workload's namespace changes, the topic
// "ns/<namespace>" of its notifier.
type Source struct {
	pods    cache.Indexer
	servers listers.ServerLister
	authz   listers.AuthorizationPolicyLister
	limits  listers.RateLimitLister
	routes  *routeListers // nil: the Gateway API is not served
	// services, when set, tells whether a Service a RateLimit targets
	// exists (status only; the limit is sent whether it does or not).
	services cache.Indexer
	topics   *notify.Topics
	synced   []cache.InformerSynced
	// trustDomain turns AuthorizationPolicy serviceAccounts into SPIFFE IDs.
	trustDomain string
}

var (
	_ policy.PodSource   = (*Source)(nil)
	_ destination.Limits = (*Source)(nil)
)

// Options are the optional parts of a Source.
type Options struct {
	// TrustDomain turns AuthorizationPolicy serviceAccounts into SPIFFE
	// IDs (empty: serviceAccounts allow nobody).
	TrustDomain string
	// Gateway, when set, gives the HTTPRoutes and GRPCRoutes whose parent
	// is a Server (nil: the Gateway API is not served, no inbound routes).
	Gateway gwinformers.SharedInformerFactory
	// Services, when set, is the shared Service informer: a RateLimit on a
	// Service that does not exist is then marked TargetNotFound.
	Services cache.SharedIndexInformer
}

// New makes the source over the Pod informer (with the namespace index
// every client-go informer has) and the policy informers of f; start f
// (and opts.Gateway) and wait for HasSynced before serving.
func New(pods cache.SharedIndexInformer, f policyinformers.SharedInformerFactory, opts Options) (*Source, error) {
	p := f.Policy().V1alpha1()
	s := &Source{
		pods: pods.GetIndexer(), servers: p.Servers().Lister(), authz: p.AuthorizationPolicies().Lister(), limits: p.RateLimits().Lister(),
		topics: notify.NewTopics(), trustDomain: opts.TrustDomain,
	}
	infs := []cache.SharedIndexInformer{p.Servers().Informer(), p.AuthorizationPolicies().Informer(), p.RateLimits().Informer()}
	if opts.Gateway != nil {
		g := opts.Gateway.Gateway().V1()
		s.routes = &routeListers{http: g.HTTPRoutes().Lister(), grpc: g.GRPCRoutes().Lister()}
		infs = append(infs, g.HTTPRoutes().Informer(), g.GRPCRoutes().Informer())
	}
	if opts.Services != nil {
		s.services = opts.Services.GetIndexer()
	}
	// Outbound limits have their own topic: the pod events that wake
	// the namespace's inbound streams change no outbound limit.
	reg, err := p.RateLimits().Informer().AddEventHandler(wakeHandler(s.notifyLimitsOf))
	if err != nil {
		return nil, fmt.Errorf("rate limit informer handler: %w", err)
	}
	s.synced = append(s.synced, reg.HasSynced)
	for _, inf := range infs {
		reg, err := inf.AddEventHandler(wakeHandler(s.notifyNamespaceOf))
		if err != nil {
			return nil, fmt.Errorf("policy informer handler: %w", err)
		}
		s.synced = append(s.synced, reg.HasSynced)
	}
	reg, err = pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { s.notifyNamespaceOf(obj) },
		UpdateFunc: func(old, obj any) {
			if podPolicyChanged(old, obj) {
				s.notifyNamespaceOf(obj)
			}
		},
		DeleteFunc: func(obj any) { s.notifyNamespaceOf(obj) },
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer handler: %w", err)
	}
	s.synced = append(s.synced, reg.HasSynced)
	return s, nil
}

func wakeHandler(f func(any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, obj any) { f(obj) }, DeleteFunc: f}
}

// routeListers list the Gateway API routes a Server may parent.
type routeListers struct {
	http gwlisters.HTTPRouteLister
	grpc gwlisters.GRPCRouteLister
}

func (r *routeListers) list(ns string) ([]*gwv1.HTTPRoute, []*gwv1.GRPCRoute) {
	h, _ := r.http.HTTPRoutes(ns).List(labels.Everything())
	g, _ := r.grpc.GRPCRoutes(ns).List(labels.Everything())
	return h, g
}

// HasSynced reports whether every handler has seen its informer's first
// list.
func (s *Source) HasSynced() bool {
	for _, ok := range s.synced {
		if !ok() {
			return false
		}
	}
	return true
}

func (s *Source) notifyNamespaceOf(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(interface{ GetNamespace() string }); ok {
		s.topics.Notify(namespaceTopic(m.GetNamespace()))
	}
}

func (s *Source) notifyLimitsOf(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(interface{ GetNamespace() string }); ok {
		s.topics.Notify(limitsTopic(m.GetNamespace()))
	}
}

func limitsTopic(ns string) string { return "limits/" + ns }

// OutboundLimit implements destination.Limits: the limit of the oldest
// RateLimit on svc's Service, with the channel of its namespace's
// RateLimits, taken before the cache is read.
func (s *Source) OutboundLimit(svc destination.ServicePort) (*apiv1.OutboundLimit, <-chan struct{}, func()) {
	changed, release := s.topics.Acquire(limitsTopic(svc.Namespace))
	limits, _ := s.limits.RateLimits(svc.Namespace).List(labels.Everything())
	return policymodel.ServiceLimit(svc.Namespace, svc.Name, limits), changed, release
}

// serviceExists reports whether the cache has the Service ns/name (true
// when Services are not watched: not known).
func (s *Source) serviceExists(ns, name string) bool {
	if s.services == nil {
		return true
	}
	_, ok, err := s.services.GetByKey(ns + "/" + name)
	return err != nil || ok
}

// podPolicyChanged: only what Translate reads (labels, service account,
// container ports, whether it runs) changes a pod's policy; status updates
// are most pod events and must not wake every stream of the namespace.
func podPolicyChanged(old, obj any) bool {
	a, ok1 := old.(*corev1.Pod)
	b, ok2 := obj.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !reflect.DeepEqual(a.Labels, b.Labels) || a.Spec.ServiceAccountName != b.Spec.ServiceAccountName ||
		finished(a) != finished(b) || !reflect.DeepEqual(a.Spec.Containers, b.Spec.Containers) ||
		!reflect.DeepEqual(a.Spec.InitContainers, b.Spec.InitContainers)
}

func finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// Resolve implements policy.Source: the policy of a workload's port now
// (over every running pod of its service account), and the channel of
// its namespace's topic, taken before the caches are read. A workload
// that is no SPIFFE ID names no pod: the default, which nothing changes
// (policy.Service refuses such requests before this).
func (s *Source) Resolve(workload string, port uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	return s.ResolvePod(workload, "", port)
}

// ResolvePod implements policy.PodSource: the policy of one pod's port,
// so a Server applies to exactly the pods it selects. A pod the cache
// does not have yet (just created), or of another service account, is
// answered as Resolve answers; the pod's arrival wakes the stream.
func (s *Source) ResolvePod(workload, pod string, port uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	id, err := identity.Parse(workload)
	if err != nil {
		return policymodel.Default(apiv1.ProtocolHint_UNKNOWN, nil), nil, func() {}
	}
	changed, release := s.topics.Acquire(namespaceTopic(id.Namespace))
	return s.resolve(id, pod, port), changed, release
}

func namespaceTopic(ns string) string { return "ns/" + ns }

// resolve computes the policy of a workload's port from the caches.
func (s *Source) resolve(id identity.ID, podName string, port uint32) *apiv1.ServerPolicy {
	objs, _ := s.pods.ByIndex(cache.NamespaceIndex, id.Namespace)
	var pods, exact []*corev1.Pod
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok || finished(p) || serviceAccount(p) != id.ServiceAccount {
			continue
		}
		pods = append(pods, p)
		if p.Name == podName {
			exact = []*corev1.Pod{p}
		}
	}
	if exact != nil {
		pods = exact
	}
	return policymodel.Translate(policymodel.Input{Pods: pods, Port: port, TrustDomain: s.trustDomain, Objects: s.objects(id.Namespace)})
}

// namespacePods returns the running pods of a namespace from the cache.
func (s *Source) namespacePods(ns string) []*corev1.Pod {
	objs, _ := s.pods.ByIndex(cache.NamespaceIndex, ns)
	var out []*corev1.Pod
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok && !finished(p) {
			out = append(out, p)
		}
	}
	return out
}

func serviceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return "default"
	}
	return p.Spec.ServiceAccountName
}

// objects lists a namespace's policy objects from the cache (read-only).
func (s *Source) objects(ns string) policymodel.Objects {
	var o policymodel.Objects
	o.Servers, _ = s.servers.Servers(ns).List(labels.Everything())
	o.Authz, _ = s.authz.AuthorizationPolicies(ns).List(labels.Everything())
	o.RateLimits, _ = s.limits.RateLimits(ns).List(labels.Everything())
	if s.routes != nil {
		o.HTTPRoutes, o.GRPCRoutes = s.routes.list(ns)
	}
	return o
}
