// Package informers holds the controller's view of the Kubernetes API: one
// client-go SharedInformerFactory with Services, EndpointSlices, Pods and
// Nodes (and Namespaces when the injector needs them; ExternalWorkloads
// when their CRD is installed), the indexes the Destination source looks
// things up by, and typed lookups over them. The caches are shared by every reader; lookups return
// the cached objects themselves, which callers must treat as read-only.
package informers

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"time"
	"unique"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	workloadversioned "github.com/trellis-mesh/trellis/api/workload/client/clientset/versioned"
	workloadinformers "github.com/trellis-mesh/trellis/api/workload/client/informers/externalversions"
	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Index names.
const (
	// IndexService indexes EndpointSlices by "namespace/name" of the
	// Service they belong to (label kubernetes.io/service-name).
	IndexService = "trellis.io/service"
	// IndexEndpointIP indexes EndpointSlices by every endpoint address.
	IndexEndpointIP = "trellis.io/endpoint-ip"
	// IndexPodIP indexes Pods by every pod IP. Host-network pods (their
	// IP is the node's) and finished pods (their IP may be reused) are
	// left out.
	IndexPodIP = "trellis.io/pod-ip"
	// IndexClusterIP indexes Services by every cluster IP.
	IndexClusterIP = "trellis.io/cluster-ip"
	// IndexExternalWorkloadIP indexes ExternalWorkloads by every address.
	IndexExternalWorkloadIP = "trellis.io/external-workload-ip"
)

// Cache is the shared informer cache. Make it with New, register event
// handlers on its informers, then Start it.
type Cache struct {
	factory        informers.SharedInformerFactory
	resync         time.Duration
	Services       cache.SharedIndexInformer
	EndpointSlices cache.SharedIndexInformer
	Pods           cache.SharedIndexInformer
	Nodes          cache.SharedIndexInformer
	// Namespaces is nil until WatchNamespaces.
	Namespaces listersv1.NamespaceLister
	// ExternalWorkloads is nil until WatchExternalWorkloads.
	ExternalWorkloads cache.SharedIndexInformer
	workloads         workloadinformers.SharedInformerFactory
}

// New makes the informers and their indexes; nothing runs until Start.
// resync 0 disables periodic resyncs: handlers here are level-triggered
// notifications, so replaying the cache would only wake every stream.
func New(client kubernetes.Interface, resync time.Duration) (*Cache, error) {
	f := informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithTransform(trim))
	c := &Cache{
		factory:        f,
		resync:         resync,
		Services:       f.Core().V1().Services().Informer(),
		EndpointSlices: f.Discovery().V1().EndpointSlices().Informer(),
		Pods:           f.Core().V1().Pods().Informer(),
		Nodes:          f.Core().V1().Nodes().Informer(),
	}
	for _, ix := range []struct {
		inf cache.SharedIndexInformer
		idx cache.Indexers
	}{
		{c.Services, cache.Indexers{IndexClusterIP: clusterIPs}},
		{c.EndpointSlices, cache.Indexers{IndexService: sliceService, IndexEndpointIP: sliceAddresses}},
		{c.Pods, cache.Indexers{IndexPodIP: podIPs}},
	} {
		if err := ix.inf.AddIndexers(ix.idx); err != nil {
			return nil, fmt.Errorf("add indexers: %w", err)
		}
	}
	return c, nil
}

// WatchNamespaces adds a Namespace informer (the injector reads namespace
// annotations). Call it before Start: the factory starts only the
// informers that exist then, and WaitForSync waits for them.
func (c *Cache) WatchNamespaces() {
	if c.Namespaces == nil {
		ns := c.factory.Core().V1().Namespaces()
		ns.Informer() // registers it with the factory
		c.Namespaces = ns.Lister()
	}
}

// WatchExternalWorkloads adds an ExternalWorkload informer, from a
// client of workload.trellis.io: call it only when the API server serves
// the CRD (a watch of a resource that does not exist never syncs), and
// before Start.
func (c *Cache) WatchExternalWorkloads(client workloadversioned.Interface) error {
	if c.ExternalWorkloads != nil {
		return nil
	}
	c.workloads = workloadinformers.NewSharedInformerFactoryWithOptions(client, c.resync, workloadinformers.WithTransform(trim))
	c.ExternalWorkloads = c.workloads.Workload().V1alpha1().ExternalWorkloads().Informer()
	if err := c.ExternalWorkloads.AddIndexers(cache.Indexers{IndexExternalWorkloadIP: externalWorkloadIPs}); err != nil {
		return fmt.Errorf("add indexers: %w", err)
	}
	return nil
}

func externalWorkloadIPs(obj any) ([]string, error) {
	ew, ok := obj.(*workloadv1.ExternalWorkload)
	if !ok {
		return nil, nil
	}
	var out []string
	for _, a := range ew.Spec.Addresses {
		if k, ok := IPKey(a.IP); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

// Start runs the informers in the background until ctx is done.
func (c *Cache) Start(ctx context.Context) {
	c.factory.StartWithContext(ctx)
	if c.workloads != nil {
		c.workloads.StartWithContext(ctx)
	}
}

// WaitForSync waits for every informer's first full list; it fails if ctx
// ends first (give it a deadline: an API server that never answers must
// not hang the controller's start).
func (c *Cache) WaitForSync(ctx context.Context) error {
	synced := c.factory.WaitForCacheSync(ctx.Done())
	if c.workloads != nil {
		maps.Copy(synced, c.workloads.WaitForCacheSync(ctx.Done()))
	}
	for typ, ok := range synced {
		if !ok {
			return fmt.Errorf("informer cache for %v did not sync: %w", typ, context.Cause(ctx))
		}
	}
	return nil
}

// Shutdown waits for the informers to stop; call it after cancelling the
// context given to Start.
func (c *Cache) Shutdown() {
	c.factory.Shutdown()
	if c.workloads != nil {
		c.workloads.Shutdown()
	}
}

// trim drops what the controller never reads before an object enters the
// cache: managed fields and foreign annotations everywhere, most of a Pod
// (the most numerous object) and of a Node (large status). Memory then
// grows with the number of objects, not their size.
func trim(obj any) (any, error) {
	if a, err := meta.Accessor(obj); err == nil {
		a.SetManagedFields(nil)
		if _, ns := obj.(*corev1.Namespace); !ns {
			// The injector reads every trellis annotation of a namespace;
			// other objects need only the mesh's own.
			a.SetAnnotations(meshAnnotations(a.GetAnnotations()))
		}
	}
	switch o := obj.(type) {
	case *corev1.Namespace:
		return &corev1.Namespace{TypeMeta: o.TypeMeta, ObjectMeta: o.ObjectMeta}, nil
	case *corev1.Node:
		// Only the zone label is read; status (images, conditions) is the
		// bulk of a node.
		return &corev1.Node{TypeMeta: o.TypeMeta, ObjectMeta: o.ObjectMeta}, nil
	case *corev1.Service:
		o.Status = corev1.ServiceStatus{}
	case *corev1.Pod:
		return trimPod(o), nil
	}
	return obj, nil
}

// meshAnnotations keeps the annotations of the mesh's own domains
// (trellis.io/..., config.trellis.io/...) except the trust anchors, a
// PEM bundle on every injected pod that only its proxy reads.
func meshAnnotations(in map[string]string) map[string]string {
	keep := 0
	for k := range in {
		if meshAnnotation(k) {
			keep++
		}
	}
	switch keep {
	case len(in):
		return in // nothing to drop: no copy
	case 0:
		return nil
	}
	out := make(map[string]string, keep)
	for k, v := range in {
		if meshAnnotation(k) {
			out[k] = v
		}
	}
	return out
}

func meshAnnotation(k string) bool {
	domain, _, ok := strings.Cut(k, "/")
	return ok && (domain == "trellis.io" || strings.HasSuffix(domain, ".trellis.io")) && k != k8slabels.AnnotationTrustAnchors
}

// trimPod keeps exactly what the cache's readers use (the Pod is the most
// numerous object, 10,000 in bench/ctrlscale):
//   - endpoints: name, namespace, labels, the mesh's annotations, the
//     controlling owner's kind and name, creation and deletion times,
//     service account, node, host network, phase, IPs, and whether a
//     container is the proxy;
//   - inbound policy: labels, service account, phase, and of each container
//     its port names and numbers and its HTTP probes' path and port.
//
// Containers with none of those are dropped, and the strings many pods
// share (namespace, service account, node, label and annotation keys and
// values, container and port names, owners) are interned.
func trimPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: intern(p.Namespace), ResourceVersion: p.ResourceVersion,
			CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
			Labels: internMap(p.Labels), Annotations: internMap(p.Annotations),
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: intern(p.Spec.ServiceAccountName),
			NodeName:           intern(p.Spec.NodeName),
			HostNetwork:        p.Spec.HostNetwork,
			InitContainers:     trimContainers(p.Spec.InitContainers),
			Containers:         trimContainers(p.Spec.Containers),
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	if len(out.Status.PodIPs) > 0 && out.Status.PodIPs[0].IP == out.Status.PodIP {
		out.Status.PodIP = out.Status.PodIPs[0].IP // one string, not two equal ones
	}
	// Only the controlling owner names the pod's workload (metric labels).
	for _, o := range p.OwnerReferences {
		if o.Controller != nil && *o.Controller {
			out.OwnerReferences = []metav1.OwnerReference{{Kind: intern(o.Kind), Name: intern(o.Name), Controller: o.Controller}}
			break
		}
	}
	return out
}

// trimContainers keeps the containers the mesh reads something of: the
// proxy (a meshed pod), and those with ports or HTTP probes.
func trimContainers(cts []corev1.Container) []corev1.Container {
	var out []corev1.Container
	for _, ct := range cts {
		t := corev1.Container{Name: intern(ct.Name),
			LivenessProbe: httpProbe(ct.LivenessProbe), ReadinessProbe: httpProbe(ct.ReadinessProbe), StartupProbe: httpProbe(ct.StartupProbe)}
		for _, cp := range ct.Ports {
			t.Ports = append(t.Ports, corev1.ContainerPort{Name: intern(cp.Name), ContainerPort: cp.ContainerPort})
		}
		if ct.Name == k8slabels.ProxyContainerName || t.Ports != nil || t.LivenessProbe != nil || t.ReadinessProbe != nil || t.StartupProbe != nil {
			out = append(out, t)
		}
	}
	return out
}

// httpProbe keeps an HTTP probe's path and port (the policy lets the
// kubelet's probe paths in); other probes do not reach the proxy as HTTP.
func httpProbe(p *corev1.Probe) *corev1.Probe {
	if p == nil || p.HTTPGet == nil {
		return nil
	}
	port := p.HTTPGet.Port
	port.StrVal = intern(port.StrVal)
	return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: intern(p.HTTPGet.Path), Port: port}}}
}

// intern returns the one shared copy of s: thousands of cached pods
// repeat the same few namespaces, service accounts, labels and names.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// internMap copies m with interned keys and values; nil when empty.
func internMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[intern(k)] = intern(v)
	}
	return out
}

func clusterIPs(obj any) ([]string, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	ips := s.Spec.ClusterIPs
	if len(ips) == 0 && s.Spec.ClusterIP != "" {
		ips = []string{s.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if k, ok := IPKey(ip); ok {
			out = append(out, k)
		}
	}
	return out, nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	name := s.Labels[discoveryv1.LabelServiceName]
	if name == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + name}, nil
}

func sliceAddresses(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return nil, nil
	}
	return SliceIPs(s), nil
}

// SliceIPs returns the index keys of every endpoint address of a slice.
func SliceIPs(s *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			if k, ok := IPKey(a); ok {
				out = append(out, k)
			}
		}
	}
	return out
}

func podIPs(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.HostNetwork || Finished(p) {
		return nil, nil
	}
	return PodIPs(p), nil
}

// PodIPs returns the index keys of a pod's IPs.
func PodIPs(p *corev1.Pod) []string {
	var out []string
	for _, ip := range p.Status.PodIPs {
		if k, ok := IPKey(ip.IP); ok {
			out = append(out, k)
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		if k, ok := IPKey(p.Status.PodIP); ok {
			out = append(out, k)
		}
	}
	return out
}

// Finished reports whether a pod has ended for good; its IP may already
// belong to another pod.
func Finished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// IPKey is the canonical form of an IP used as an index key, so that
// "::ffff:10.0.0.1" and "10.0.0.1" are one key. ok is false for
// something that is not an IP (e.g. "None" for a headless Service).
func IPKey(s string) (string, bool) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return "", false
	}
	return ip.Unmap().String(), true
}

// Service returns a Service from the cache, or nil.
func (c *Cache) Service(namespace, name string) *corev1.Service {
	s, _ := get[*corev1.Service](c.Services, namespace+"/"+name)
	return s
}

// Pod returns a Pod from the cache, or nil.
func (c *Cache) Pod(namespace, name string) *corev1.Pod {
	p, _ := get[*corev1.Pod](c.Pods, namespace+"/"+name)
	return p
}

// Node returns a Node from the cache, or nil.
func (c *Cache) Node(name string) *corev1.Node {
	n, _ := get[*corev1.Node](c.Nodes, name)
	return n
}

// ServicesIn returns the Services of a namespace.
func (c *Cache) ServicesIn(namespace string) []*corev1.Service {
	return byIndex[*corev1.Service](c.Services, cache.NamespaceIndex, namespace)
}

// ExternalWorkload returns an ExternalWorkload from the cache, or nil (also
// when they are not watched).
func (c *Cache) ExternalWorkload(namespace, name string) *workloadv1.ExternalWorkload {
	if c.ExternalWorkloads == nil {
		return nil
	}
	ew, _ := get[*workloadv1.ExternalWorkload](c.ExternalWorkloads, namespace+"/"+name)
	return ew
}

// ExternalWorkloadsIn returns the ExternalWorkloads of a namespace (none
// when they are not watched).
func (c *Cache) ExternalWorkloadsIn(namespace string) []*workloadv1.ExternalWorkload {
	if c.ExternalWorkloads == nil {
		return nil
	}
	return byIndex[*workloadv1.ExternalWorkload](c.ExternalWorkloads, cache.NamespaceIndex, namespace)
}

// ExternalWorkloadsByIP returns the ExternalWorkloads listing an address
// (none when they are not watched).
func (c *Cache) ExternalWorkloadsByIP(ip string) []*workloadv1.ExternalWorkload {
	if c.ExternalWorkloads == nil {
		return nil
	}
	return byIndex[*workloadv1.ExternalWorkload](c.ExternalWorkloads, IndexExternalWorkloadIP, ip)
}

// ServicesByClusterIP returns the Services with a cluster IP (normally at
// most one).
func (c *Cache) ServicesByClusterIP(ip string) []*corev1.Service {
	return byIndex[*corev1.Service](c.Services, IndexClusterIP, ip)
}

// SlicesOf returns the EndpointSlices of a Service.
func (c *Cache) SlicesOf(namespace, name string) []*discoveryv1.EndpointSlice {
	return byIndex[*discoveryv1.EndpointSlice](c.EndpointSlices, IndexService, namespace+"/"+name)
}

// SlicesWithIP returns the EndpointSlices that list an address.
func (c *Cache) SlicesWithIP(ip string) []*discoveryv1.EndpointSlice {
	return byIndex[*discoveryv1.EndpointSlice](c.EndpointSlices, IndexEndpointIP, ip)
}

// PodsByIP returns the live, non-host-network Pods with an IP. More than
// one means the API is mid-way through a reuse; callers pick.
func (c *Cache) PodsByIP(ip string) []*corev1.Pod {
	return byIndex[*corev1.Pod](c.Pods, IndexPodIP, ip)
}

func get[T any](inf cache.SharedIndexInformer, key string) (T, bool) {
	var zero T
	obj, ok, err := inf.GetIndexer().GetByKey(key)
	if err != nil || !ok {
		return zero, false
	}
	t, ok := obj.(T)
	return t, ok
}

func byIndex[T any](inf cache.SharedIndexInformer, index, key string) []T {
	objs, err := inf.GetIndexer().ByIndex(index, key)
	if err != nil {
		return nil
	}
	out := make([]T, 0, len(objs))
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// Served lists the resources the API server serves in groupVersion (none
// when it does not serve the group version at all, e.g. CRDs not
// installed).
func Served(disc discovery.DiscoveryInterface, groupVersion string) (map[string]bool, error) {
	list, err := disc.ServerResourcesForGroupVersion(groupVersion)
	if apierrors.IsNotFound(err) {
		return map[string]bool{}, nil
	} else if err != nil {
		return nil, fmt.Errorf("discover %s: %w", groupVersion, err)
	}
	out := map[string]bool{}
	for _, r := range list.APIResources {
		out[r.Name] = true
	}
	return out, nil
}
