package mirror

import (
	"bytes"
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	listersdiscoveryv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/trellis-mesh/trellis/controller/k8s/epslice"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
	"github.com/trellis-mesh/trellis/internal/mclink"
)

// peer is a running link: informers on the peer cluster.
type peer struct {
	link   mclink.Link
	cancel context.CancelFunc
	done   chan struct{}

	services listerscorev1.ServiceLister
	pods     listerscorev1.PodLister
	slices   listersdiscoveryv1.EndpointSliceLister
	synced   []cache.InformerSynced
}

func (p *peer) hasSynced() bool {
	for _, s := range p.synced {
		if !s() {
			return false
		}
	}
	return true
}

// syncLink starts, restarts or stops the peer of a link Secret. A Secret
// that is gone removes the link's mirrors; one that no longer parses keeps
// them (and the running peer), and says why.
func (m *Mirror) syncLink(ctx context.Context, name string) error {
	obj, exists, err := m.secrets.GetStore().GetByKey(m.cfg.Namespace + "/" + name)
	if err != nil {
		return err
	}
	if !exists {
		cluster, ok := clusterOfSecret(name)
		if !ok {
			return nil
		}
		m.stopPeer(cluster)
		m.requeueMirrors(cluster)
		return nil
	}
	if obj.(*corev1.Secret).Type != mclink.SecretType {
		return nil // the API server filters by type; a fake may not
	}
	l, err := mclink.FromSecret(obj.(*corev1.Secret))
	if err != nil {
		m.metrics.badLinks.Inc()
		m.log.Error("link Secret ignored; its mirrors are kept", "err", err)
		return nil
	}
	m.mu.Lock()
	old := m.links[l.Cluster]
	m.mu.Unlock()
	if old != nil && sameLink(old.link, l) {
		return nil
	}
	m.stopPeer(l.Cluster)
	client, err := m.cfg.Remote(l)
	if err != nil {
		return err
	}
	p := m.startPeer(ctx, l, client)
	m.mu.Lock()
	m.links[l.Cluster] = p
	m.mu.Unlock()
	m.log.Info("link started", "cluster", l.Cluster, "trustDomain", l.TrustDomain, "mode", l.Mode)
	return nil
}

func sameLink(a, b mclink.Link) bool {
	return a.Cluster == b.Cluster && a.TrustDomain == b.TrustDomain && a.ClusterDomain == b.ClusterDomain &&
		a.Mode == b.Mode && bytes.Equal(a.Kubeconfig, b.Kubeconfig)
}

func clusterOfSecret(name string) (string, bool) {
	if len(name) <= len(mclink.SecretPrefix) || name[:len(mclink.SecretPrefix)] != mclink.SecretPrefix {
		return "", false
	}
	return name[len(mclink.SecretPrefix):], true
}

// startPeer watches the peer's exported Services, their slices and the
// pods behind them. Every event enqueues the service it may change.
func (m *Mirror) startPeer(ctx context.Context, l mclink.Link, client kubernetes.Interface) *peer {
	pctx, cancel := context.WithCancel(ctx)
	p := &peer{link: l, cancel: cancel, done: make(chan struct{})}
	f := informers.NewSharedInformerFactory(client, m.cfg.Resync)
	sf := informers.NewSharedInformerFactoryWithOptions(client, m.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = mclink.LabelExport + "=true" }))
	// Only meshed pods are ever mirrored: the API server filters the rest
	// out, so a large peer costs a cache of its meshed pods only.
	pf := informers.NewSharedInformerFactoryWithOptions(client, m.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = k8slabels.LabelProxied + "=true" }))
	svcs, pods, sls := sf.Core().V1().Services(), pf.Core().V1().Pods(), f.Discovery().V1().EndpointSlices()
	p.services, p.pods, p.slices = svcs.Lister(), pods.Lister(), sls.Lister()
	enqueue := func(ns, name string) {
		if name != "" {
			m.q.Add(key{cluster: l.Cluster, ns: ns, n: name})
		}
	}
	handle(svcs.Informer(), func(obj any) {
		if s, ok := obj.(*corev1.Service); ok {
			enqueue(s.Namespace, s.Name)
		}
	})
	handle(sls.Informer(), func(obj any) {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			enqueue(s.Namespace, s.Labels[discoveryv1.LabelServiceName])
		}
	})
	handle(pods.Informer(), func(obj any) {
		// A pod's identity or meshing changed: its services' slices.
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		all, _ := p.slices.EndpointSlices(pod.Namespace).List(labels.Everything())
		for _, sl := range all {
			for _, ep := range sl.Endpoints {
				if ep.TargetRef != nil && ep.TargetRef.Name == pod.Name {
					enqueue(sl.Namespace, sl.Labels[discoveryv1.LabelServiceName])
					break
				}
			}
		}
	})
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), pods.Informer(), sls.Informer()} {
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			m.metrics.watchErrors.WithLabelValues(l.Cluster).Inc()
			m.log.Warn("peer watch failed; its mirrors are kept", "cluster", l.Cluster, "err", err)
		})
		p.synced = append(p.synced, inf.HasSynced)
	}
	for _, fac := range []informers.SharedInformerFactory{sf, pf, f} {
		fac.Start(pctx.Done())
	}
	go func() {
		defer close(p.done)
		if cache.WaitForCacheSync(pctx.Done(), p.synced...) {
			m.metrics.synced(l.Cluster, time.Now())
			// Events of the first list came before the peer was synced:
			// every exported service now, and every mirror (those no
			// longer exported are found from this side).
			all, _ := p.services.List(labels.Everything())
			for _, s := range all {
				enqueue(s.Namespace, s.Name)
			}
			m.requeueMirrors(l.Cluster)
		}
		<-pctx.Done()
		for _, fac := range []informers.SharedInformerFactory{sf, pf, f} {
			fac.Shutdown()
		}
	}()
	return p
}

func (m *Mirror) stopPeer(cluster string) {
	m.mu.Lock()
	p := m.links[cluster]
	delete(m.links, cluster)
	m.mu.Unlock()
	if p != nil {
		p.cancel()
		<-p.done
		m.log.Info("link stopped", "cluster", cluster)
	}
}

func (m *Mirror) stopPeers() {
	m.mu.Lock()
	var cs []string
	for c := range m.links {
		cs = append(cs, c)
	}
	m.mu.Unlock()
	for _, c := range cs {
		m.stopPeer(c)
	}
}

// requeueMirrors enqueues every mirror of cluster here.
func (m *Mirror) requeueMirrors(cluster string) {
	for _, obj := range m.services.GetStore().List() {
		s := obj.(*corev1.Service)
		if s.Labels[mclink.LabelLink] == cluster {
			m.q.Add(key{cluster: cluster, ns: s.Namespace, n: s.Labels[mclink.LabelMirrorOf]})
		}
	}
}

// syncService makes the mirror of one peer service what the peer says,
// or removes it when the link or the export is gone.
func (m *Mirror) syncService(ctx context.Context, k key) error {
	name, err := mclink.MirrorName(k.n, k.cluster)
	if err != nil {
		m.log.Warn("peer service not mirrored", "err", err)
		return nil
	}
	m.mu.Lock()
	p := m.links[k.cluster]
	m.mu.Unlock()
	if p == nil {
		if _, exists, _ := m.secrets.GetStore().GetByKey(m.cfg.Namespace + "/" + mclink.SecretName(k.cluster)); exists {
			return nil // a link being (re)started: it requeues once synced
		}
		return m.removeMirror(ctx, k.ns, name, k.cluster)
	}
	if !p.hasSynced() {
		return nil // requeued once synced
	}
	remote, err := p.services.Services(k.ns).Get(k.n)
	if apierrors.IsNotFound(err) || err == nil && !mclink.Exported(remote) {
		return m.removeMirror(ctx, k.ns, name, k.cluster)
	}
	if err != nil {
		return err
	}
	mirrored, err := m.applyService(ctx, p.link, remote, name)
	if err != nil {
		return err
	}
	if !mirrored {
		// A Service of that name that is not this link's mirror: none of
		// our slices may name it, or the peer's pods would serve it.
		return m.applySlices(ctx, k.ns, name, k.cluster, nil)
	}
	sls, err := p.slices.EndpointSlices(k.ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: k.n}))
	if err != nil {
		return err
	}
	want, skipped := desiredSlices(p.link, name, sls, func(ns, n string) *corev1.Pod {
		pod, _ := p.pods.Pods(ns).Get(n)
		return pod
	})
	if p.link.Mode == mclink.ModeGateway {
		want = viaGateway(p.link, want, desiredService(p.link, remote, name).Spec.Ports)
	}
	m.metrics.unmeshed.WithLabelValues(k.cluster, k.ns, k.n).Set(float64(skipped))
	if err := m.applySlices(ctx, k.ns, name, k.cluster, want); err != nil {
		return err
	}
	m.metrics.synced(k.cluster, time.Now())
	return nil
}

// applyService makes the mirror Service what the peer's says. mirrored is
// false when there is none to hold slices: a Service of that name that is
// not this link's mirror, or no such namespace here.
func (m *Mirror) applyService(ctx context.Context, l mclink.Link, remote *corev1.Service, name string) (mirrored bool, err error) {
	want := desiredService(l, remote, name)
	obj, exists, err := m.services.GetStore().GetByKey(remote.Namespace + "/" + name)
	if err != nil {
		return false, err
	}
	api := m.cfg.Local.CoreV1().Services(remote.Namespace)
	if !exists {
		if _, err := api.Create(ctx, want, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return m.existing(ctx, l.Cluster, remote.Namespace, name)
			}
			if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
				// The namespace does not exist here (or is terminating).
				m.log.Info("peer service not mirrored: no such namespace here", "cluster", l.Cluster, "namespace", remote.Namespace, "service", remote.Name)
				return false, nil
			}
			return false, fmt.Errorf("create mirror %s/%s: %w", remote.Namespace, name, err)
		}
		return true, nil
	}
	have := obj.(*corev1.Service)
	if have.Labels[mclink.LabelLink] != l.Cluster {
		return false, m.conflict(l.Cluster, remote.Namespace, name, have.Labels[mclink.LabelLink])
	}
	if !serviceDiffers(have, want) {
		return true, nil
	}
	upd := have.DeepCopy()
	upd.Labels, upd.Annotations, upd.Spec.Ports, upd.Spec.Selector, upd.Spec.Type = want.Labels, want.Annotations, want.Spec.Ports, nil, want.Spec.Type
	if _, err := api.Update(ctx, upd, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
		return false, fmt.Errorf("update mirror %s/%s: %w", remote.Namespace, name, err)
	}
	return true, nil
}

const fieldManager = "trellis-mirror"

// existing: the create found a Service of the mirror's name that the
// cache does not hold. Ours, just created and not yet seen: its informer
// event syncs it again. Anyone else's: a conflict.
func (m *Mirror) existing(ctx context.Context, cluster, ns, name string) (mirrored bool, err error) {
	svc, err := m.cfg.Local.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("get %s/%s: %w", ns, name, err)
	}
	if svc.Labels[mclink.LabelLink] == cluster {
		return true, nil
	}
	return false, m.conflict(cluster, ns, name, svc.Labels[mclink.LabelLink])
}

// conflict: a Service of the mirror's name exists and is not this link's
// mirror. It is never touched; retrying would not help until it goes
// (the peer's resync tries again), so this is not an error.
func (m *Mirror) conflict(cluster, ns, name, owner string) error {
	m.metrics.conflicts.WithLabelValues(cluster).Inc()
	m.log.Warn("peer service not mirrored: a Service of its mirror's name exists and is not this link's mirror; not touched",
		"cluster", cluster, "namespace", ns, "service", name, "mirrorOf", owner)
	return nil
}

// applySlices makes the mirror slices of ns/name exactly want.
func (m *Mirror) applySlices(ctx context.Context, ns, name, cluster string, want []*discoveryv1.EndpointSlice) error {
	_, err := epslice.Apply(ctx, m.cfg.Local.DiscoveryV1().EndpointSlices(ns), m.localSlices(ns, name, cluster), want, fieldManager)
	return err
}

func (m *Mirror) localSlices(ns, name, cluster string) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, obj := range m.slices.GetStore().List() {
		sl := obj.(*discoveryv1.EndpointSlice)
		if sl.Namespace == ns && sl.Labels[discoveryv1.LabelServiceName] == name && sl.Labels[mclink.LabelLink] == cluster &&
			sl.Labels[discoveryv1.LabelManagedBy] == mclink.ManagedBy {
			out = append(out, sl)
		}
	}
	return out
}

// removeMirror deletes a mirror Service of cluster and its slices; never
// a Service that is not that cluster's mirror.
func (m *Mirror) removeMirror(ctx context.Context, ns, name, cluster string) error {
	if err := m.applySlices(ctx, ns, name, cluster, nil); err != nil {
		return err
	}
	obj, exists, err := m.services.GetStore().GetByKey(ns + "/" + name)
	if err != nil || !exists || obj.(*corev1.Service).Labels[mclink.LabelLink] != cluster {
		return err
	}
	uid := obj.(*corev1.Service).UID
	err = m.cfg.Local.CoreV1().Services(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete mirror %s/%s: %w", ns, name, err)
	}
	m.metrics.unmeshed.DeleteLabelValues(cluster, ns, obj.(*corev1.Service).Labels[mclink.LabelMirrorOf])
	m.log.Info("mirror removed", "cluster", cluster, "namespace", ns, "service", name)
	return nil
}
