package endpoints

import (
	"context"
	"reflect"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/controller/destination"
)

type held struct {
	r       destination.Resolution
	ch      <-chan struct{}
	release func()
}

func hold(t *testing.T, src *Source, path string) held {
	t.Helper()
	a, err := authority.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	r, ch, release := src.Resolve(a, "")
	t.Cleanup(release)
	return held{r, ch, release}
}

func sameAnswer(a, b destination.Resolution) bool {
	return reflect.ValueOf(a.Endpoints.Addrs).Pointer() == reflect.ValueOf(b.Endpoints.Addrs).Pointer()
}

// Streams asking the same question hold one answer, not a copy each; a
// change gives the next askers a new answer and leaves the old one intact
// for the streams still diffing against it.
func TestAnswerShared(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/cluster.yaml")...)
	a := hold(t, f.src, "books.demo:80")
	b := hold(t, f.src, "books.demo.svc.cluster.local:80")
	ip := hold(t, f.src, "10.96.0.10:80")
	if !sameAnswer(a.r, b.r) {
		t.Fatal("two streams on one service port got two copies of the answer")
	}
	if sameAnswer(a.r, ip.r) {
		t.Fatal("the cluster-IP stream shares the name's answer: different topics must not share")
	}
	before := addrs(a.r.Endpoints)

	ctx := context.Background()
	sl, err := f.client.DiscoveryV1().EndpointSlices("demo").Get(ctx, "books-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[2].Conditions.Ready = ptr(true)
	if _, err := f.client.DiscoveryV1().EndpointSlices("demo").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.ch:
	case <-time.After(30 * time.Second):
		t.Fatal("no notification for the slice update")
	}
	c := hold(t, f.src, "books.demo:80")
	if sameAnswer(a.r, c.r) {
		t.Fatal("an asker after a change got the answer from before it")
	}
	if got := addrs(a.r.Endpoints); got != before {
		t.Fatalf("the shared answer changed under its holders: %q, was %q", got, before)
	}
	if addrs(c.r.Endpoints) == before {
		t.Fatalf("the new answer misses the change: %q", before)
	}
	for _, h := range []held{a, b, ip, c} {
		h.release()
	}
	if n := f.src.answers.len(); n != 0 {
		t.Errorf("%d answers kept after every stream released", n)
	}
}

// Many streams resolving while the service changes all end on the last
// state (run with -race: the shared answer is read concurrently).
func TestAnswerSharedConcurrent(t *testing.T) {
	f := start(t, loadFixture(t, "testdata/cluster.yaml")...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := "10.244.0.11:8080,10.244.0.12:8080,10.244.0.13:8080"
	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for range 20 {
		wg.Go(func() {
			a, _ := authority.Parse("books.demo:80")
			for {
				r, ch, release := f.src.Resolve(a, "")
				got := addrs(r.Endpoints)
				if got == want {
					release()
					return
				}
				select {
				case <-ch:
					release()
				case <-ctx.Done():
					release()
					errs <- got
					return
				}
			}
		})
	}
	sl, err := f.client.DiscoveryV1().EndpointSlices("demo").Get(ctx, "books-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sl.Endpoints[2].Conditions.Ready = ptr(true)
	if _, err := f.client.DiscoveryV1().EndpointSlices("demo").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for got := range errs {
		t.Errorf("a stream never saw the change: %q", got)
	}
	if n := f.src.answers.len(); n != 0 {
		t.Errorf("%d answers kept after every stream released", n)
	}
}
