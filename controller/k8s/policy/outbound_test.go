package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
)

// TestOutboundLimitOfService: the limit sent with a Service's routes is
// its oldest valid RateLimit's, the same for every port, and none for a
// Service whose only RateLimit is invalid or that only a Server's
// RateLimit names.
func TestOutboundLimitOfService(t *testing.T) {
	fc := startFakeWith(t, "testdata/outbound.yaml", 0, true)
	books := &apiv1.OutboundLimit{Name: "shop/books-limit", RequestsPerSecond: 50, Burst: 100}
	for _, tc := range []struct {
		svc  destination.ServicePort
		want *apiv1.OutboundLimit
	}{
		{destination.ServicePort{Namespace: "shop", Name: "books", Port: 8080}, books},
		{destination.ServicePort{Namespace: "shop", Name: "books", Port: 9090}, books},
		{destination.ServicePort{Namespace: "shop", Name: "orders", Port: 80}, nil},
		{destination.ServicePort{Namespace: "other", Name: "books", Port: 8080}, nil},
		{destination.ServicePort{Namespace: "shop", Name: "payments", Port: 80}, &apiv1.OutboundLimit{Name: "shop/to-payments", RequestsPerSecond: 5}},
	} {
		got, _, release := fc.src.OutboundLimit(tc.svc)
		release()
		if !proto.Equal(got, tc.want) {
			t.Errorf("%v: limit %v, want %v", tc.svc, got, tc.want)
		}
	}
}

// TestOutboundLimitFollowsChanges: an open stream's channel fires when a
// RateLimit of the namespace changes, and the next answer has the change;
// the RateLimit's removal leaves the Service unlimited.
func TestOutboundLimitFollowsChanges(t *testing.T) {
	fc := startFakeWith(t, "testdata/outbound.yaml", 0, true)
	ctx := context.Background()
	books := destination.ServicePort{Namespace: "shop", Name: "books", Port: 8080}
	step := func(change func() error, want *apiv1.OutboundLimit) {
		t.Helper()
		_, changed, release := fc.src.OutboundLimit(books)
		defer release()
		if err := change(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-time.After(time.Minute):
			t.Fatal("no wake-up after the change")
		}
		deadline := time.Now().Add(time.Minute)
		for {
			got, _, rel := fc.src.OutboundLimit(books)
			rel()
			if proto.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("limit %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	rls := fc.policy.PolicyV1alpha1().RateLimits("shop")
	step(func() error {
		rl, err := rls.Get(ctx, "books-limit", metav1.GetOptions{})
		if err != nil {
			return err
		}
		rl.Spec.RequestsPerSecond = ptr(int32(20))
		_, err = rls.Update(ctx, rl, metav1.UpdateOptions{})
		return err
	}, &apiv1.OutboundLimit{Name: "shop/books-limit", RequestsPerSecond: 20, Burst: 100})
	// The older one gone, the newer one applies.
	step(func() error { return rls.Delete(ctx, "books-limit", metav1.DeleteOptions{}) },
		&apiv1.OutboundLimit{Name: "shop/books-limit-2", RequestsPerSecond: 1})
	step(func() error { return rls.Delete(ctx, "books-limit-2", metav1.DeleteOptions{}) }, nil)
}

func ptr[T any](v T) *T { return &v }

// TestOutboundLimitStatus: every RateLimit on a Service gets the verdict
// that says what is sent, and a missing Service's arrival resolves the
// RateLimit naming it.
func TestOutboundLimitStatus(t *testing.T) {
	fc := startFakeWith(t, "testdata/outbound.yaml", 0, true)
	ctx := context.Background()
	for _, tc := range []struct{ name, reason, mentions string }{
		{"books-limit", policyv1.ReasonAccepted, "each client proxy has its own bucket"},
		{"books-limit-2", policyv1.ReasonConflict, `older RateLimit "books-limit"`},
		{"to-payments", policyv1.ReasonTargetNotFound, `Service "payments"`},
		{"orders-concurrency", policyv1.ReasonInvalid, "concurrency"},
		{"orders-server", policyv1.ReasonTargetNotFound, `Server "orders"`},
	} {
		waitCondition(t, fc, tc.name, tc.reason, tc.mentions)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := fc.core.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, fc, "to-payments", policyv1.ReasonAccepted, "")
}

// waitCondition waits (up to a minute) for the RateLimit's Accepted
// condition to have reason, its message mentioning mentions.
func waitCondition(t *testing.T, fc fakeCluster, name, reason, mentions string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		rl, err := fc.policy.PolicyV1alpha1().RateLimits("shop").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		c := meta.FindStatusCondition(rl.Status.Conditions, policyv1.ConditionAccepted)
		if c != nil && c.Reason == reason && strings.Contains(c.Message, mentions) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: Accepted %+v, want reason %s mentioning %q", name, c, reason, mentions)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
