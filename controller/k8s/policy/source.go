package policy

import (
	"fmt"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	listers "github.com/trellis-mesh/trellis/api/policy/client/listers/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/internal/identity"
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
	topics  *notify.Topics
	synced  []cache.InformerSynced
}

var _ policy.Source = (*Source)(nil)

// New makes the source over the Pod informer (with the namespace index
// every client-go informer has) and the policy informers of f; start f
// and wait for HasSynced before serving.
func New(pods cache.SharedIndexInformer, f policyinformers.SharedInformerFactory) (*Source, error) {
	p := f.Policy().V1alpha1()
	s := &Source{
		pods: pods.GetIndexer(), servers: p.Servers().Lister(), authz: p.AuthorizationPolicies().Lister(), limits: p.RateLimits().Lister(),
		topics: notify.NewTopics(),
	}
	wake := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.notifyNamespaceOf(obj) },
		UpdateFunc: func(_, obj any) { s.notifyNamespaceOf(obj) },
		DeleteFunc: func(obj any) { s.notifyNamespaceOf(obj) },
	}
	for _, inf := range []cache.SharedIndexInformer{p.Servers().Informer(), p.AuthorizationPolicies().Informer(), p.RateLimits().Informer()} {
		reg, err := inf.AddEventHandler(wake)
		if err != nil {
			return nil, fmt.Errorf("policy informer handler: %w", err)
		}
		s.synced = append(s.synced, reg.HasSynced)
	}
	reg, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
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

// Resolve implements policy.Source: the policy of a workload's port now,
// and the channel of its namespace's topic, taken before the caches are
// read. A workload that is no SPIFFE ID names no pod: the default, which
// nothing changes (policy.Service refuses such requests before this).
func (s *Source) Resolve(workload string, port uint32) (*apiv1.ServerPolicy, <-chan struct{}, func()) {
	id, err := identity.Parse(workload)
	if err != nil {
		return policy.Default(apiv1.ProtocolHint_UNKNOWN), nil, func() {}
	}
	changed, release := s.topics.Acquire(namespaceTopic(id.Namespace))
	return s.resolve(id, port), changed, release
}

func namespaceTopic(ns string) string { return "ns/" + ns }

// resolve computes the policy of a workload's port from the caches.
func (s *Source) resolve(id identity.ID, port uint32) *apiv1.ServerPolicy {
	objs, _ := s.pods.ByIndex(cache.NamespaceIndex, id.Namespace)
	var pods []*corev1.Pod
	for _, o := range objs {
		p, ok := o.(*corev1.Pod)
		if !ok || finished(p) {
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if sa == id.ServiceAccount {
			pods = append(pods, p)
		}
	}
	return Translate(pods, port, s.objects(id.Namespace))
}

// objects lists a namespace's policy objects from the cache (read-only).
func (s *Source) objects(ns string) Objects {
	var o Objects
	o.Servers, _ = s.servers.Servers(ns).List(labels.Everything())
	o.Authz, _ = s.authz.AuthorizationPolicies(ns).List(labels.Everything())
	o.RateLimits, _ = s.limits.RateLimits(ns).List(labels.Everything())
	return o
}
