package status

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/trellis-mesh/trellis/controller/k8s/serve/apiservertest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	apiservertest.Stop()
	os.Exit(code)
}

// TestLeaseElector runs two replicas' electors against a real API server:
// exactly one leads at a time, and when the leader stops the other takes
// over.
func TestLeaseElector(t *testing.T) {
	cfg, err := clientcmd.BuildConfigFromFlags("", apiservertest.Kubeconfig(t))
	if err != nil {
		t.Fatal(err)
	}
	client := kubernetes.NewForConfigOrDie(cfg)
	var leaders, most atomic.Int32
	leading := make(chan string, 4)
	ctxs := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	for i := range 2 {
		id := fmt.Sprintf("replica-%d", i)
		ctx, cancel := context.WithCancel(context.Background())
		ctxs[id] = cancel
		e := &LeaseElector{Client: client, Namespace: "default", Name: "status-test", Identity: id,
			LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 200 * time.Millisecond}
		wg.Go(func() {
			e.Run(ctx, func(ctx context.Context) {
				n := leaders.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				leading <- id
				<-ctx.Done()
				leaders.Add(-1)
			})
		})
	}
	defer func() {
		for _, c := range ctxs {
			c()
		}
		wg.Wait()
	}()
	wait := func() string {
		select {
		case id := <-leading:
			return id
		case <-time.After(time.Minute):
			t.Fatal("nobody leads")
			return ""
		}
	}
	start := time.Now()
	first := wait()
	t.Logf("%s leads after %v", first, time.Since(start))
	start = time.Now()
	ctxs[first]()
	second := wait()
	t.Logf("%s took over after %v", second, time.Since(start))
	if second == first {
		t.Errorf("%s led again after stopping", first)
	}
	if most.Load() != 1 {
		t.Errorf("%d replicas led at once", most.Load())
	}
}
