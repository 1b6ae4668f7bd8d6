package policy

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	kinformers "k8s.io/client-go/informers"
	kfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyfake "github.com/trellis-mesh/trellis/api/policy/client/clientset/versioned/fake"
	policyinformers "github.com/trellis-mesh/trellis/api/policy/client/informers/externalversions"
	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/metrics"
	"github.com/trellis-mesh/trellis/controller/policy"
	"github.com/trellis-mesh/trellis/controller/policy/policytest"
)

type fakeCluster struct {
	core    *kfake.Clientset
	policy  *policyfake.Clientset
	factory policyinformers.SharedInformerFactory
	svc     *policy.Service // over the Source, as controller/kube serves it
	src     *Source
	status  *StatusWriter
}

// countWatches makes a fake clientset's watches signal when they open:
// the fake cannot replay a change made between an informer's list and its
// watch, so tests change objects only once every watch is open.
func countWatches(c interface {
	PrependWatchReactor(string, k8stesting.WatchReactionFunc)
	Tracker() k8stesting.ObjectTracker
}, watching chan<- struct{}) {
	c.PrependWatchReactor("*", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := c.Tracker().Watch(a.GetResource(), a.GetNamespace())
		watching <- struct{}{}
		return true, w, err
	})
}

// startFake runs the service and the status writer over fake clientsets
// holding the fixture's objects; resync > 0 replays the policy caches.
func startFake(t *testing.T, resync time.Duration) fakeCluster {
	t.Helper()
	return startFakeWith(t, "testdata/policy.yaml", resync, false)
}

// startFakeWith is startFake over another fixture; withServices watches
// Services too (RateLimits on Services are checked against them).
func startFakeWith(t *testing.T, fixture string, resync time.Duration, withServices bool) fakeCluster {
	t.Helper()
	var core, pol []runtime.Object
	for _, o := range loadFixture(t, fixture) {
		if o.GetObjectKind().GroupVersionKind().Group == policyv1.GroupName {
			pol = append(pol, o)
		} else {
			core = append(core, o)
		}
	}
	kc, pc := kfake.NewClientset(core...), policyfake.NewSimpleClientset(pol...)
	watches := 4 // pods and the three policy kinds
	watching := make(chan struct{}, 5)
	countWatches(kc, watching)
	countWatches(pc, watching)
	kf := kinformers.NewSharedInformerFactory(kc, 0)
	pf := policyinformers.NewSharedInformerFactory(pc, resync)
	pods := kf.Core().V1().Pods().Informer()
	var services cache.SharedIndexInformer
	if withServices {
		services, watches = kf.Core().V1().Services().Informer(), watches+1
	}
	src, err := New(pods, pf, Options{TrustDomain: "cluster.local", Services: services})
	if err != nil {
		t.Fatal(err)
	}
	sw, err := NewStatusWriter(pc, pf, src, pods, services, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); kf.Shutdown(); pf.Shutdown() })
	kf.Start(ctx.Done())
	pf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), src.HasSynced) {
		t.Fatal("not synced")
	}
	for range watches {
		select {
		case <-watching:
		case <-time.After(time.Minute):
			t.Fatal("watches did not open")
		}
	}
	go sw.Run(ctx, 2)
	svc := &policy.Service{Source: src, Metrics: metrics.New()}
	return fakeCluster{core: kc, policy: pc, factory: pf, svc: svc, src: src, status: sw}
}

// stream is a Policy_WatchInboundServer that hands answers to the test.
type stream = policytest.Stream

func next(t *testing.T, s *stream) *apiv1.ServerPolicy {
	t.Helper()
	select {
	case p := <-s.Out:
		return p
	case <-time.After(time.Minute):
		t.Fatal("no policy update")
		return nil
	}
}

// TestWatchInboundFollowsChanges: a stream gets the Server's answer, then
// a new answer when a policy is added, then the default when the Server
// goes.
func TestWatchInboundFollowsChanges(t *testing.T) {
	fc := startFake(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const web = "spiffe://cluster.local/ns/shop/sa/web"
	s := &stream{Ctx: policytest.CallerContext(t, ctx, web), Out: make(chan *apiv1.ServerPolicy, 8)}
	errc := make(chan error, 1)
	go func() {
		errc <- fc.svc.WatchInbound(&apiv1.InboundPolicyRequest{Workload: web, Port: 9090, Pod: "web-1"}, s)
	}()
	if p := next(t, s); p.GetName() != "server/web-admin" || len(p.GetAuthorizations()) != 0 {
		t.Fatalf("first answer %v, want server/web-admin allowing nobody", p)
	}
	ap := &policyv1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "admin-ops", Namespace: "shop"},
		Spec:       policyv1.AuthorizationPolicySpec{TargetRef: policyv1.PolicyTargetRef{Kind: "Server", Name: "web-admin"}, Namespaces: []string{"ops"}},
	}
	if _, err := fc.policy.PolicyV1alpha1().AuthorizationPolicies("shop").Create(ctx, ap, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := next(t, s); len(p.GetAuthorizations()) != 1 || p.GetAuthorizations()[0].GetNamespaces()[0] != "ops" {
		t.Fatalf("after the policy: %v", p)
	}
	if err := fc.policy.PolicyV1alpha1().Servers("shop").Delete(ctx, "web-admin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if p := next(t, s); p.GetName() != "default" {
		t.Fatalf("after the Server went: %v", p)
	}
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Errorf("stream ended with %v", err)
	}
}

func TestWatchInboundRefusesBadRequests(t *testing.T) {
	fc := startFake(t, 0)
	for _, req := range []*apiv1.InboundPolicyRequest{
		{Workload: "spiffe://cluster.local/ns/shop/sa/web", Port: 70000},
		{Workload: "web", Port: 80},
	} {
		s := &stream{Ctx: context.Background(), Out: make(chan *apiv1.ServerPolicy, 1)}
		if err := fc.svc.WatchInbound(req, s); err == nil {
			t.Errorf("%v accepted", req)
		}
	}
}

// TestStatusWrittenOnce: every object gets its Accepted condition in one
// write; the writes' own events and many resyncs write nothing more.
func TestStatusWrittenOnce(t *testing.T) {
	fc := startFake(t, 20*time.Millisecond)
	const objects = 10 // in the fixture
	start := time.Now()
	for fc.status.Writes() < objects {
		if time.Since(start) > time.Minute {
			t.Fatalf("%d status writes, want %d", fc.status.Writes(), objects)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the resyncs replay every object a few times over.
	base := fc.status.Synced()
	for fc.status.Synced() < base+5*objects {
		if time.Since(start) > time.Minute {
			t.Fatalf("resyncs did not reach the writer (%d syncs)", fc.status.Synced()-base)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d syncs after the first writes, in %v", fc.status.Synced()-base, time.Since(start))
	updates := 0
	for _, a := range fc.policy.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			updates++
		}
	}
	if fc.status.Writes() != objects || updates != objects {
		t.Errorf("%d writes (%d status updates), want %d", fc.status.Writes(), updates, objects)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		get    func() (policyv1.Status, error)
		reason string
	}{
		{func() (policyv1.Status, error) {
			o, err := fc.policy.PolicyV1alpha1().AuthorizationPolicies("shop").Get(ctx, "to-nowhere", metav1.GetOptions{})
			return o.Status, err
		}, policyv1.ReasonTargetNotFound},
		{func() (policyv1.Status, error) {
			o, err := fc.policy.PolicyV1alpha1().RateLimits("shop").Get(ctx, "backend-limit-2", metav1.GetOptions{})
			return o.Status, err
		}, policyv1.ReasonConflict},
		{func() (policyv1.Status, error) {
			o, err := fc.policy.PolicyV1alpha1().Servers("shop").Get(ctx, "web-http", metav1.GetOptions{})
			return o.Status, err
		}, policyv1.ReasonAccepted},
	} {
		st, err := tc.get()
		if err != nil {
			t.Fatal(err)
		}
		if c := meta.FindStatusCondition(st.Conditions, policyv1.ConditionAccepted); c == nil || c.Reason != tc.reason {
			t.Errorf("conditions %+v, want Accepted with reason %s", st.Conditions, tc.reason)
		}
	}
}
