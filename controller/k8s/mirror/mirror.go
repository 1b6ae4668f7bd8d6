// Package mirror makes a peer cluster's exported Services appear in this
// cluster (issue 16, docs/multicluster.md). For every link Secret
// (internal/mclink) in the controller's namespace it watches the peer's
// Services labelled trellis.io/export=true, their EndpointSlices and pods,
// with the read-only credentials the Secret holds, and writes here a
// mirror Service <name>-<cluster> in the same namespace with mirror
// EndpointSlices of the peer's meshed pod IPs (flat mode), each slice
// annotated with the identity its endpoints must prove. The destination
// source serves them like any Service, so a client proxy originates mTLS
// to the peer's pods and checks their identity.
//
// The shape is client-go's sample-controller: informers -> rate-limited
// workqueue -> sync, writing only what differs. A peer that cannot be
// reached keeps its last mirrors: the data plane keeps serving.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"

	"github.com/trellis-mesh/trellis/internal/mclink"
)

// Config configures a Mirror.
type Config struct {
	// Local is this cluster's client (needs write on Services and
	// EndpointSlices, read on Secrets of Namespace).
	Local kubernetes.Interface
	// Namespace holds the link Secrets (the controller's namespace).
	Namespace string
	// Remote makes the client of a link's peer; default: from the
	// Secret's kubeconfig. Tests pass fake clientsets.
	Remote     func(mclink.Link) (kubernetes.Interface, error)
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Resync re-checks every mirror this often (repairs hand edits).
	Resync time.Duration
}

// key is a work item: a link (by Secret name) or a mirrored service.
type key struct {
	link           string // Secret name; set for a link item
	cluster, ns, n string // set for a service item
}

// linkName is the cluster a work item is about.
func (k key) linkName() string {
	if c, ok := clusterOfSecret(k.link); ok {
		return c
	}
	return k.cluster
}

// Mirror runs the links. Start it only on the leading replica.
type Mirror struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	q       workqueue.TypedRateLimitingInterface[key]

	secrets  cache.SharedIndexInformer
	services cache.SharedIndexInformer // local mirrors
	slices   cache.SharedIndexInformer // local mirror slices

	mu    sync.Mutex
	links map[string]*peer // by cluster
}

// New makes a Mirror; Run starts it.
func New(cfg Config) (*Mirror, error) {
	if cfg.Local == nil || cfg.Namespace == "" {
		return nil, errors.New("mirror: Local and Namespace are required")
	}
	if cfg.Remote == nil {
		cfg.Remote = remoteClient
	}
	if cfg.Resync == 0 {
		cfg.Resync = 5 * time.Minute
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Mirror{cfg: cfg, log: log, links: map[string]*peer{}}
	var err error
	if m.metrics, err = newMetrics(cfg.Registerer, m.counts); err != nil {
		return nil, err
	}
	return m, nil
}

// remoteClient reaches a peer with the link's kubeconfig.
func remoteClient(l mclink.Link) (kubernetes.Interface, error) {
	rc, err := clientcmd.RESTConfigFromKubeConfig(l.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("link %s: kubeconfig: %w", l.Cluster, err)
	}
	rc.Timeout = 30 * time.Second
	rc.UserAgent = "trellis-controller/mirror"
	return kubernetes.NewForConfig(rc)
}

// Run mirrors until ctx ends.
func (m *Mirror) Run(ctx context.Context, workers int) {
	m.q = workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
		workqueue.TypedRateLimitingQueueConfig[key]{Name: "mirror"})
	defer m.q.ShutDown()
	sf := informers.NewSharedInformerFactoryWithOptions(m.cfg.Local, m.cfg.Resync, informers.WithNamespace(m.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("type", string(mclink.SecretType)).String()
		}))
	lf := informers.NewSharedInformerFactoryWithOptions(m.cfg.Local, m.cfg.Resync,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = mclink.LabelLink }))
	m.mu.Lock() // counts reads the caches from scrapes
	m.secrets = sf.Core().V1().Secrets().Informer()
	m.services = lf.Core().V1().Services().Informer()
	m.slices = lf.Discovery().V1().EndpointSlices().Informer()
	m.mu.Unlock()
	handle(m.secrets, func(obj any) {
		if s, ok := obj.(*corev1.Secret); ok {
			m.q.Add(key{link: s.Name})
		}
	})
	// A mirror changed or removed by hand is put back; one whose link or
	// peer service is gone is removed by its sync.
	handle(m.services, func(obj any) {
		if s, ok := obj.(*corev1.Service); ok {
			m.q.Add(key{cluster: s.Labels[mclink.LabelLink], ns: s.Namespace, n: s.Labels[mclink.LabelMirrorOf]})
		}
	})
	handle(m.slices, func(obj any) {
		sl, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return
		}
		if svc, ok, _ := m.services.GetStore().GetByKey(sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName]); ok {
			s := svc.(*corev1.Service)
			m.q.Add(key{cluster: s.Labels[mclink.LabelLink], ns: s.Namespace, n: s.Labels[mclink.LabelMirrorOf]})
		}
	})
	sf.Start(ctx.Done())
	lf.Start(ctx.Done())
	defer func() {
		m.stopPeers()
		sf.Shutdown()
		lf.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), m.secrets.HasSynced, m.services.HasSynced, m.slices.HasSynced) {
		return
	}
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m.next(ctx) {
			}
		}()
	}
	<-ctx.Done()
	m.q.ShutDown()
	wg.Wait()
}

// handle calls fn with the object of every event (the last state of a
// deleted one).
func handle(inf cache.SharedIndexInformer, fn func(any)) {
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    fn,
		UpdateFunc: func(_, cur any) { fn(cur) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			fn(obj)
		},
	})
}

func (m *Mirror) next(ctx context.Context) bool {
	k, quit := m.q.Get()
	if quit {
		return false
	}
	defer m.q.Done(k)
	var err error
	if k.link != "" {
		err = m.syncLink(ctx, k.link)
	} else {
		err = m.syncService(ctx, k)
	}
	if err != nil {
		m.log.Warn("mirror sync failed; retrying", "link", k.link, "cluster", k.cluster, "namespace", k.ns, "service", k.n, "err", err)
		m.metrics.errors.WithLabelValues(k.linkName()).Inc()
		m.q.AddRateLimited(k)
		return true
	}
	m.q.Forget(k)
	return true
}
