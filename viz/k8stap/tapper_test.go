package k8stap

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"k8s.io/client-go/rest"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
)

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		r    model.Resource
		want string
		err  bool
	}{
		{model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}, prefix + "demo/deployments/web/tap", false},
		{model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, prefix + "demo/tap", false},
		{model.Resource{Kind: "pods", Namespace: "demo", Name: "a/b"}, prefix + "demo/pods/a%2Fb/tap", false},
		{model.Resource{Kind: "services", Namespace: "demo", Name: "web"}, "", true},
		{model.Resource{Kind: "pods", Namespace: "demo"}, "", true},
		{model.Resource{Kind: "pods", Name: "x"}, "", true},
	} {
		got, err := Path(tc.r)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("Path(%+v) = %q, %v; want %q, error %v", tc.r, got, err, tc.want, tc.err)
		}
	}
}

// TestTap: the request the API server gets (path, body, the kubeconfig's
// credentials), events decoded line by line, and a refusal's Status
// message as the error.
func TestTap(t *testing.T) {
	var gotBody, gotAuth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotBody, gotAuth = string(b), r.Header.Get("Authorization")
		if strings.Contains(r.URL.Path, "/pods/") {
			w.WriteHeader(403)
			_, _ = w.Write([]byte(`{"kind":"Status","status":"Failure","reason":"Forbidden","code":403,"message":"user \"bob\" cannot watch"}`))
			return
		}
		if r.Method != "POST" || r.URL.Path != prefix+"demo/deployments/web/tap" {
			http.NotFound(w, r)
			return
		}
		for i := 1; i <= 3; i++ {
			b, _ := protojson.Marshal(&apiv1.TapEvent{Id: uint64(i), Pod: "web-1", Namespace: "demo"})
			_, _ = w.Write(append(b, '\n'))
		}
	}))
	defer srv.Close()
	tp := &Tapper{Config: &rest.Config{Host: srv.URL, BearerToken: "secret-token"}}
	var ids []uint64
	err := tp.Tap(context.Background(), model.TapRequest{
		Target:  model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"},
		Observe: &apiv1.ObserveRequest{Limit: 3, Match: &apiv1.TapMatch{PathPrefix: "/books"}},
	}, func(ev *apiv1.TapEvent) error { ids = append(ids, ev.GetId()); return nil })
	if err != nil || len(ids) != 3 || ids[2] != 3 {
		t.Fatalf("ids %v, err %v", ids, err)
	}
	var req apiv1.ObserveRequest
	if err := protojson.Unmarshal([]byte(gotBody), &req); err != nil || req.GetMatch().GetPathPrefix() != "/books" || req.GetLimit() != 3 {
		t.Errorf("body %q: %v", gotBody, err)
	}
	if gotAuth != "Bearer secret-token" {
		t.Errorf("Authorization %q", gotAuth)
	}
	stop := errors.New("stop")
	if err := tp.Tap(context.Background(), model.TapRequest{Target: model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}, Observe: &apiv1.ObserveRequest{}},
		func(*apiv1.TapEvent) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("fn's error: %v", err)
	}
	err = tp.Tap(context.Background(), model.TapRequest{Target: model.Resource{Kind: "pods", Namespace: "demo", Name: "x"}, Observe: &apiv1.ObserveRequest{}},
		func(*apiv1.TapEvent) error { return nil })
	var te *Error
	if !errors.As(err, &te) || te.Code != 403 || te.Message != `user "bob" cannot watch` {
		t.Errorf("refusal: %#v", err)
	}
}

func FuzzReadEvents(f *testing.F) {
	f.Add([]byte("{\"id\":\"1\"}\n\n{\"pod\":\"x\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = readEvents(strings.NewReader(string(data)), func(ev *apiv1.TapEvent) error {
			if ev == nil {
				t.Fatal("nil event")
			}
			return nil
		})
	})
}
