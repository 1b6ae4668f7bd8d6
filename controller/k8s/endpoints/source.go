// Package endpoints is the Kubernetes Source of the Destination service: it
// answers what a destination ("name.ns.svc.cluster.local:port", a
// ClusterIP:port, a pod IP:port, a headless service's
// "host.name.ns.svc.cluster.local:port") names from the shared informer
// cache of Services, EndpointSlices, Pods and Nodes (and ExternalWorkloads,
// when watched), and wakes exactly the streams whose answer an event may
// have changed.
package endpoints

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"

	workloadv1 "github.com/trellis-mesh/trellis/api/workload/v1alpha1"
	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
	"github.com/trellis-mesh/trellis/controller/k8s/external"
	"github.com/trellis-mesh/trellis/controller/k8s/informers"
	"github.com/trellis-mesh/trellis/controller/notify"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// ZoneLabel is the node label endpoints get their zone from. The pod
// annotations the source reads are those of internal/k8slabels.
const ZoneLabel = corev1.LabelTopologyZone

// Options configure a Source.
type Options struct {
	// TrustDomain of endpoint identities; default cluster.local.
	TrustDomain string
	// ClusterDomain is the DNS suffix of services; default cluster.local.
	ClusterDomain string
	Log           *slog.Logger
	// Registerer, when set, gets the source's metrics.
	Registerer prometheus.Registerer
}

// Source implements destination.Source over an informer cache.
type Source struct {
	cache         *informers.Cache
	trustDomain   string
	clusterDomain string
	log           *slog.Logger
	n             *notify.Topics
	answers       *answers
	registrations []cache.ResourceEventHandlerRegistration

	badAnnotations *prometheus.CounterVec
	events         *prometheus.CounterVec
}

var _ destination.Source = (*Source)(nil)

// New registers the source's event handlers on the cache's informers. Call
// it before the cache is started, so no event is missed.
func New(c *informers.Cache, opts Options) (*Source, error) {
	s := &Source{
		cache:         c,
		trustDomain:   opts.TrustDomain,
		clusterDomain: strings.ToLower(opts.ClusterDomain),
		log:           opts.Log,
		n:             notify.NewTopics(),
		answers:       newAnswers(),
		badAnnotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_k8s_bad_annotations_total",
			Help: "Kubernetes objects seen with an annotation Trellis cannot parse (the good part of it is used), by annotation.",
		}, []string{"annotation"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trellis_controller_k8s_events_total",
			Help: "Informer events that may change a destination, by kind (service, endpointslice, pod, node, externalworkload).",
		}, []string{"kind"}),
	}
	if s.trustDomain == "" {
		s.trustDomain = identity.DefaultTrustDomain
	}
	if s.clusterDomain == "" {
		s.clusterDomain = authority.DefaultClusterDomain
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if opts.Registerer != nil {
		for _, col := range []prometheus.Collector{s.badAnnotations, s.events, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "trellis_controller_k8s_watched_topics",
			Help: "Services and IPs that open Destination streams are waiting on.",
		}, func() float64 { return float64(s.n.Len()) })} {
			if err := opts.Registerer.Register(col); err != nil {
				return nil, err
			}
		}
	}
	for _, h := range []struct {
		inf cache.SharedIndexInformer
		fn  func(old, cur any)
	}{
		{c.Services, s.onService},
		{c.EndpointSlices, s.onSlice},
		{c.Pods, s.onPod},
		{c.Nodes, s.onNode},
	} {
		if err := s.register(h.inf, h.fn); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// WatchExternalWorkloads makes the source follow the cache's
// ExternalWorkloads (informers.Cache.WatchExternalWorkloads, called
// first), whose endpoints it answers with their identity; call it before
// the cache starts. Without it, those endpoints are left out.
func (s *Source) WatchExternalWorkloads() error {
	if s.cache.ExternalWorkloads == nil {
		return errors.New("endpoints: the cache does not watch ExternalWorkloads")
	}
	return s.register(s.cache.ExternalWorkloads, s.onExternalWorkload)
}

func (s *Source) register(inf cache.SharedIndexInformer, fn func(old, cur any)) error {
	reg, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { fn(nil, obj) },
		UpdateFunc: fn,
		DeleteFunc: func(obj any) { fn(untomb(obj), nil) },
	})
	if err != nil {
		return fmt.Errorf("endpoints: event handler: %w", err)
	}
	s.registrations = append(s.registrations, reg)
	return nil
}

// HasSynced reports whether the handlers have seen every object of the
// informers' first lists. Serve only after it: before, answers are
// incomplete and a reconnecting proxy would drop a good cache.
func (s *Source) HasSynced() bool {
	for _, r := range s.registrations {
		if !r.HasSynced() {
			return false
		}
	}
	return true
}

// Watched is the number of topics open streams wait on (for tests and
// the metric).
func (s *Source) Watched() int { return s.n.Len() }

func untomb(obj any) any {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func svcKey(ns, name string) string { return "svc/" + ns + "/" + name }
func ipKey(ip string) string        { return "ip/" + ip }

// serviceKeys are the topics that depend on a Service: its name and its
// cluster IPs.
func (s *Source) serviceKeys(ns, name string, svc *corev1.Service) []string {
	keys := []string{svcKey(ns, name)}
	if svc == nil {
		svc = s.cache.Service(ns, name)
	}
	if svc != nil {
		for _, ip := range serviceIPs(svc) {
			keys = append(keys, ipKey(ip))
		}
	}
	return keys
}

func serviceIPs(svc *corev1.Service) []string {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range ips {
		if k, ok := informers.IPKey(ip); ok {
			out = append(out, k)
		}
	}
	return out
}

func (s *Source) onService(old, cur any) {
	s.events.WithLabelValues("service").Inc()
	var keys []string
	for _, o := range []any{old, cur} {
		svc, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		keys = append(keys, s.serviceKeys(svc.Namespace, svc.Name, svc)...)
		// Pod-IP destinations take protocol hints from the services they
		// back.
		for _, sl := range s.cache.SlicesOf(svc.Namespace, svc.Name) {
			for _, ip := range informers.SliceIPs(sl) {
				keys = append(keys, ipKey(ip))
			}
		}
	}
	if svc, ok := cur.(*corev1.Service); ok {
		s.checkAnnotation("service", svc.ObjectMeta)
	}
	s.n.Notify(keys...)
}

func (s *Source) onSlice(old, cur any) {
	s.events.WithLabelValues("endpointslice").Inc()
	var keys []string
	for _, o := range []any{old, cur} {
		sl, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" {
			keys = append(keys, s.serviceKeys(sl.Namespace, name, nil)...)
		}
		for _, ip := range informers.SliceIPs(sl) {
			keys = append(keys, ipKey(ip))
		}
	}
	s.n.Notify(keys...)
}

func (s *Source) onPod(old, cur any) {
	op, _ := old.(*corev1.Pod)
	cp, _ := cur.(*corev1.Pod)
	if op != nil && cp != nil && !podChanged(op, cp) {
		// Most pod updates are status conditions the mesh does not read.
		return
	}
	s.events.WithLabelValues("pod").Inc()
	var keys []string
	for _, p := range []*corev1.Pod{op, cp} {
		if p == nil {
			continue
		}
		for _, ip := range informers.PodIPs(p) {
			keys = append(keys, ipKey(ip))
			keys = s.servicesWithIP(keys, ip, "")
		}
	}
	if cp != nil {
		s.checkAnnotation("pod", cp.ObjectMeta)
	}
	s.n.Notify(keys...)
}

// servicesWithIP appends the topics of the services with a slice listing
// ip (of namespace ns only, unless ns is empty).
func (s *Source) servicesWithIP(keys []string, ip, ns string) []string {
	for _, sl := range s.cache.SlicesWithIP(ip) {
		if name := sl.Labels[discoveryv1.LabelServiceName]; name != "" && (ns == "" || sl.Namespace == ns) {
			keys = append(keys, s.serviceKeys(sl.Namespace, name, nil)...)
		}
	}
	return keys
}

// onExternalWorkload wakes the addresses of the workload, old and new,
// and the services whose slices list one: their answers depend on its
// certification, addresses and service account.
func (s *Source) onExternalWorkload(old, cur any) {
	ow, _ := old.(*workloadv1.ExternalWorkload)
	cw, _ := cur.(*workloadv1.ExternalWorkload)
	if ow != nil && cw != nil && !externalWorkloadChanged(ow, cw) {
		return // a renewal's new expiry, labels: their slices change if it matters
	}
	s.events.WithLabelValues("externalworkload").Inc()
	var keys []string
	for _, w := range []*workloadv1.ExternalWorkload{ow, cw} {
		if w == nil {
			continue
		}
		for _, a := range w.Spec.Addresses {
			if ip, ok := informers.IPKey(a.IP); ok {
				keys = append(keys, ipKey(ip))
				keys = s.servicesWithIP(keys, ip, w.Namespace)
			}
		}
	}
	s.n.Notify(keys...)
}

// externalWorkloadChanged reports whether an update touches what a
// destination reads.
func externalWorkloadChanged(a, b *workloadv1.ExternalWorkload) bool {
	return a.Spec.ServiceAccount != b.Spec.ServiceAccount || external.Certified(a) != external.Certified(b) ||
		!slices.Equal(a.Spec.Addresses, b.Spec.Addresses)
}

// podChanged reports whether an update touches what a destination reads.
func podChanged(a, b *corev1.Pod) bool {
	if a.Spec.ServiceAccountName != b.Spec.ServiceAccountName || a.Spec.NodeName != b.Spec.NodeName ||
		a.Spec.HostNetwork != b.Spec.HostNetwork || a.Status.Phase != b.Status.Phase ||
		(a.DeletionTimestamp == nil) != (b.DeletionTimestamp == nil) ||
		strings.Join(informers.PodIPs(a), ",") != strings.Join(informers.PodIPs(b), ",") ||
		isMeshed(a) != isMeshed(b) ||
		a.Annotations[k8slabels.AnnotationOpaquePorts] != b.Annotations[k8slabels.AnnotationOpaquePorts] ||
		len(a.Labels) != len(b.Labels) {
		return true
	}
	for k, v := range a.Labels {
		if b.Labels[k] != v {
			return true
		}
	}
	return false
}

func (s *Source) onNode(old, cur any) {
	on, _ := old.(*corev1.Node)
	cn, _ := cur.(*corev1.Node)
	if on != nil && cn != nil && on.Labels[ZoneLabel] == cn.Labels[ZoneLabel] {
		// Node status heartbeats arrive every few seconds; only the zone
		// matters here.
		return
	}
	s.events.WithLabelValues("node").Inc()
	// A zone change is rare and touches every endpoint on the node; waking
	// every stream to re-diff is cheaper than indexing pods by node.
	s.n.NotifyAll()
}

func (s *Source) checkAnnotation(kind string, m metav1.ObjectMeta) {
	v, ok := m.Annotations[k8slabels.AnnotationOpaquePorts]
	if !ok {
		return
	}
	if _, err := ParsePortSet(v); err != nil {
		s.badAnnotations.WithLabelValues(k8slabels.AnnotationOpaquePorts).Inc()
		s.log.Warn("bad annotation; its valid ports are used", "kind", kind, "namespace", m.Namespace, "name", m.Name,
			"annotation", k8slabels.AnnotationOpaquePorts, "err", err)
	}
}
