package policy

import (
	"fmt"
	"log/slog"
	"reflect"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"

	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	listers "github.com/trellis-mesh/trellis/api/policy/client/listers/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/internal/identity"
)

// Service serves Policy.WatchInbound from the shared informers: the
// answer is computed again whenever a pod or a policy object of the
// workload's namespace changes, and sent only when it differs.
type Service struct {
	apiv1.UnimplementedPolicyServer

	pods    cache.Indexer
	servers listers.ServerLister
	authz   listers.AuthorizationPolicyLister
	limits  listers.RateLimitLister
	n       *notifier
	synced  []cache.InformerSynced
	metrics *metrics.Metrics
	log     *slog.Logger
	done    <-chan struct{}
}

// Options of New.
type Options struct {
	Metrics *metrics.Metrics
	Log     *slog.Logger
	// Done, when closed, ends every stream with Unavailable.
	Done <-chan struct{}
}

// New makes the service over the Pod informer (with the namespace index
// every client-go informer has) and the policy informers of f; start f
// and wait for HasSynced before serving.
func New(pods cache.SharedIndexInformer, f policyinformers.SharedInformerFactory, opts Options) (*Service, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = metrics.New()
	}
	p := f.Policy().V1alpha1()
	s := &Service{
		pods: pods.GetIndexer(), servers: p.Servers().Lister(), authz: p.AuthorizationPolicies().Lister(), limits: p.RateLimits().Lister(),
		n: newNotifier(), metrics: opts.Metrics, log: opts.Log, done: opts.Done,
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
func (s *Service) HasSynced() bool {
	for _, ok := range s.synced {
		if !ok() {
			return false
		}
	}
	return true
}

func (s *Service) notifyNamespaceOf(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(interface{ GetNamespace() string }); ok {
		s.n.notify("ns/" + m.GetNamespace())
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

// Resolve returns the policy of a workload's port now.
func (s *Service) Resolve(id identity.ID, port uint32) *apiv1.ServerPolicy {
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
func (s *Service) objects(ns string) Objects {
	var o Objects
	o.Servers, _ = s.servers.Servers(ns).List(labels.Everything())
	o.Authz, _ = s.authz.AuthorizationPolicies(ns).List(labels.Everything())
	o.RateLimits, _ = s.limits.RateLimits(ns).List(labels.Everything())
	return o
}

// WatchInbound sends the policy of a workload's port at once, and again
// whenever it changes.
func (s *Service) WatchInbound(req *apiv1.InboundPolicyRequest, stream apiv1.Policy_WatchInboundServer) error {
	if req.GetPort() > 65535 {
		return status.Errorf(codes.InvalidArgument, "port %d is outside 0-65535", req.GetPort())
	}
	id, err := identity.Parse(req.GetWorkload())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "workload: %v", err)
	}
	s.metrics.PolicyStreams.Inc()
	defer s.metrics.PolicyStreams.Dec()
	var last *apiv1.ServerPolicy
	for {
		var err error
		if last, err = s.sendAndWait(stream, id, req.GetPort(), last); err != nil {
			return err
		}
	}
}

// sendAndWait sends the current answer if it differs from last, then
// waits for a change of the namespace.
func (s *Service) sendAndWait(stream apiv1.Policy_WatchInboundServer, id identity.ID, port uint32, last *apiv1.ServerPolicy) (*apiv1.ServerPolicy, error) {
	// Take the topic before reading, so a change in between still wakes us.
	changed, release := s.n.acquire("ns/" + id.Namespace)
	defer release()
	if p := s.Resolve(id, port); last == nil || !proto.Equal(last, p) {
		if err := stream.Send(p); err != nil {
			return nil, err
		}
		last = p
	}
	ctx := stream.Context()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, status.Error(codes.Unavailable, "controller shutting down")
	case <-changed:
		return last, nil
	}
}
