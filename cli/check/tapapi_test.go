package check

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func TestTapAPICheck(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       Status
		contains   string
	}{
		{"available", `{"status":{"conditions":[{"type":"Available","status":"True"}]}}`, 200, OK, "is Available"},
		{"unreachable", `{"status":{"conditions":[{"type":"Available","status":"False","reason":"FailedDiscoveryCheck","message":"no route"}]}}`, 200, Fail, "FailedDiscoveryCheck: no route"},
		{"no condition", `{"status":{}}`, 200, Fail, "no Available condition"},
		{"missing", `{"kind":"Status","status":"Failure","reason":"NotFound","code":404,"message":"apiservices not found"}`, 404, Fail, "could not find"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/apis/apiregistration.k8s.io/v1/apiservices/"+TapAPIService {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.code)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			kc, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			o := TapAPICheck.Run(t.Context(), &Env{Kube: kc})
			if o.Status != tc.want || !strings.Contains(o.Message, tc.contains) {
				t.Errorf("%+v; want %v containing %q", o, tc.want, tc.contains)
			}
		})
	}
}
