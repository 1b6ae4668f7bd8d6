package routes

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	gwscheme "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/scheme"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/controller/destination"
)

// fixture is a Source over fake clientsets loaded from a YAML file.
type fixture struct {
	src *Source
	kc  *fake.Clientset
	gc  *gwfake.Clientset
}

func newFixture(t *testing.T, path string) fixture {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var kube, gw []runtime.Object
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		if obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil); err == nil {
			kube = append(kube, obj)
			continue
		}
		obj, _, err := gwscheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v\n%s", path, err, doc)
		}
		gw = append(gw, obj)
	}
	f := fixture{kc: fake.NewClientset(kube...), gc: gwfake.NewClientset(gw...)}
	kf := kinformers.NewSharedInformerFactory(f.kc, 0)
	gf := gwinformers.NewSharedInformerFactory(f.gc, 0)
	f.src, err = New(kf.Core().V1().Services().Informer(), gf, Options{Grants: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); kf.Shutdown(); gf.Shutdown() })
	kf.Start(ctx.Done())
	gf.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), f.src.HasSynced) {
		t.Fatal("not synced")
	}
	return f
}

var booksPort = destination.ServicePort{Namespace: "shop", Name: "books", Port: 8080}

func names(rs []*apiv1.Route) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.GetName())
	}
	return out
}

func TestSourceRoutes(t *testing.T) {
	f := newFixture(t, "testdata/shop.yaml")
	for _, tc := range []struct {
		caller string
		want   string
	}{
		{"shop", "shop/books-split"},
		{"", "shop/books-split"},
		{"web", "web/books-grpc-for-web"},
	} {
		rs, _, release := f.src.Routes(booksPort, tc.caller)
		release()
		if got := strings.Join(names(rs), ","); got != tc.want {
			t.Errorf("caller %q: routes %s, want %s", tc.caller, got, tc.want)
		}
		if tc.caller == "web" && rs[0].GetBackends()[0].GetAuthority() != "books-v1.shop.svc.cluster.local:8080" {
			t.Errorf("the ReferenceGrant does not let web's route send to shop: %v", rs[0])
		}
	}
	rs, _, release := f.src.Routes(destination.ServicePort{Namespace: "shop", Name: "cart", Port: 8080}, "shop")
	release()
	if len(rs) != 0 {
		t.Errorf("cart has no route, got %v", names(rs))
	}
}

// A change wakes the streams of the routes' parent only; a backend's
// removal wakes its route's parent.
func TestSourceWakesAffectedStreams(t *testing.T) {
	f := newFixture(t, "testdata/shop.yaml")
	ctx := context.Background()
	_, books, releaseBooks := f.src.Routes(booksPort, "shop")
	defer releaseBooks()
	_, cart, releaseCart := f.src.Routes(destination.ServicePort{Namespace: "shop", Name: "cart", Port: 8080}, "shop")
	defer releaseCart()

	hr, err := f.gc.GatewayV1().HTTPRoutes("shop").Get(ctx, "books-split", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	hr.Spec.Rules[0].BackendRefs[0].Weight = new(int32(50))
	hr.Generation++
	if _, err := f.gc.GatewayV1().HTTPRoutes("shop").Update(ctx, hr, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(t, books, "books after its route changed")
	f.until(t, "the new weight", func(rs []*apiv1.Route) bool { return rs[0].GetBackends()[0].GetWeight() == 50 })
	if err := f.kc.CoreV1().Services("shop").Delete(ctx, "books-v2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// A missing backend keeps its weight with no authority (500s).
	f.until(t, "books-v2 unresolved", func(rs []*apiv1.Route) bool {
		b := rs[0].GetBackends()[1]
		return b.GetAuthority() == "" && b.GetWeight() == 10
	})
	select {
	case <-cart:
		t.Error("cart's stream was woken by changes that are not its")
	default:
	}
}

// until reads books' routes until ok accepts them, waiting on the
// channel between reads (level-triggered: no wake-up is missed).
func (f fixture) until(t *testing.T, what string, ok func([]*apiv1.Route) bool) {
	t.Helper()
	for {
		rs, changed, release := f.src.Routes(booksPort, "shop")
		if ok(rs) {
			release()
			return
		}
		wait(t, changed, what)
		release()
	}
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: not woken", what)
	}
}
