package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// webhook is a handler behind a real TLS server on loopback; the client
// trusts exactly that server's certificate.
type webhook struct {
	srv *httptest.Server
	reg *prometheus.Registry
}

func startWebhook(t *testing.T, cfg Config) *webhook {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = discardLogger()
	}
	srv := httptest.NewTLSServer(NewHandler(cfg))
	t.Cleanup(srv.Close)
	return &webhook{srv: srv, reg: reg}
}

func (w *webhook) post(t *testing.T, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, w.srv.URL+Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := w.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (w *webhook) count(result string) float64 {
	m, err := w.reg.Gather()
	if err != nil {
		return -1
	}
	for _, f := range m {
		if f.GetName() != "trellis_injector_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			if s.GetLabel()[0].GetValue() == result {
				return s.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// review loads the recorded AdmissionReview and lets a test edit it as
// generic JSON.
func review(t *testing.T, edit func(req map[string]any, pod map[string]any)) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/review-create-pod.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	req := doc["request"].(map[string]any)
	if edit != nil {
		edit(req, req["object"].(map[string]any))
	}
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func annotations(pod map[string]any) map[string]any {
	return pod["metadata"].(map[string]any)["annotations"].(map[string]any)
}

func (w *webhook) call(t *testing.T, contentType string, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	status, b := w.post(t, contentType, body)
	return decodeResponse(t, status, b)
}

// decodeResponse checks the envelope and returns the response.
func decodeResponse(t *testing.T, status int, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, body)
	}
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &rv); err != nil {
		t.Fatalf("response %s: %v", body, err)
	}
	if rv.APIVersion != "admission.k8s.io/v1" || rv.Kind != "AdmissionReview" || rv.Response == nil {
		t.Fatalf("response envelope %s", body)
	}
	if rv.Response.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Errorf("response uid %q", rv.Response.UID)
	}
	return rv.Response
}

// patched applies the response's patch to the request's pod.
func patched(t *testing.T, reviewBody []byte, resp *admissionv1.AdmissionResponse) ([]byte, *corev1.Pod) {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patch type %v", resp.PatchType)
	}
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal(reviewBody, &rv); err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch %s: %v", resp.Patch, err)
	}
	out, err := p.Apply(rv.Request.Object.Raw)
	if err != nil {
		t.Fatalf("apply %s: %v", resp.Patch, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(out, &pod); err != nil {
		t.Fatal(err)
	}
	return out, &pod
}

func TestWebhookInjects(t *testing.T) {
	w := startWebhook(t, Config{Version: "v0.9.0"})
	body := review(t, nil)
	resp := w.call(t, "application/json", body)
	if !resp.Allowed {
		t.Fatalf("not allowed: %+v", resp.Result)
	}
	raw, pod := patched(t, body, resp)
	if got := names(pod.Spec.InitContainers); strings.Join(got, ",") != "trellis-init,trellis-proxy" {
		t.Errorf("init containers %v", got)
	}
	if got := names(pod.Spec.Containers); strings.Join(got, ",") != "app" {
		t.Errorf("containers %v", got)
	}
	if pod.Annotations[k8slabels.AnnotationProxyVersion] != "v0.9.0" || pod.Labels[k8slabels.LabelProxied] != "true" || pod.Labels["app"] != "web" {
		t.Errorf("metadata %v %v", pod.Annotations, pod.Labels)
	}
	if len(pod.Spec.Volumes) != 5 || pod.Spec.Volumes[0].Name != "kube-api-access-abcde" {
		t.Errorf("volumes %v", pod.Spec.Volumes)
	}
	if envOf(pod.Spec.InitContainers[1])["TRELLIS_PROXY_OPAQUE_PORTS"] != "5432" {
		t.Error("opaque ports annotation not applied")
	}
	// Fields this build's types do not know survive the patch.
	if !bytes.Contains(raw, []byte(`"aFieldFromTheFuture":{"keep":"me"}`)) {
		t.Errorf("unknown field lost: %s", raw)
	}
	if got := w.count(ResultInjected); got != 1 {
		t.Errorf("injected count %v", got)
	}

	// The API server may call again with the patched pod (reinvocation):
	// nothing more to do.
	again := review(t, func(req, _ map[string]any) {
		var p map[string]any
		if err := json.Unmarshal(raw, &p); err != nil {
			t.Fatal(err)
		}
		req["object"] = p
	})
	resp = w.call(t, "application/json", again)
	if !resp.Allowed || resp.Patch != nil {
		t.Errorf("second pass: allowed=%v patch=%s", resp.Allowed, resp.Patch)
	}
	if got := w.count(ResultSkipped); got != 1 {
		t.Errorf("skipped count %v", got)
	}
}

func TestWebhookNamespaceAnnotations(t *testing.T) {
	lookups := 0
	w := startWebhook(t, Config{NamespaceAnnotations: func(_ context.Context, ns string) (map[string]string, error) {
		lookups++
		switch ns {
		case "shop":
			return map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled, k8slabels.AnnotationSidecarMode: k8slabels.SidecarClassic}, nil
		case "kube-system":
			return map[string]string{k8slabels.AnnotationInject: k8slabels.InjectEnabled}, nil
		}
		return nil, errors.New("namespace not in cache")
	}})
	noPodAnnotation := func(_, pod map[string]any) { pod["metadata"].(map[string]any)["annotations"] = map[string]any{} }

	// Namespace opt-in and its classic mode.
	body := review(t, noPodAnnotation)
	resp := w.call(t, "application/json", body)
	_, pod := patched(t, body, resp)
	if got := names(pod.Spec.Containers); strings.Join(got, ",") != "trellis-proxy,app" {
		t.Errorf("classic containers %v", got)
	}

	// kube-system: never injected, not even looked up.
	before := lookups
	body = review(t, func(req, pod map[string]any) {
		req["namespace"] = "kube-system"
		pod["metadata"].(map[string]any)["namespace"] = "kube-system"
	})
	resp = w.call(t, "application/json", body)
	if !resp.Allowed || resp.Patch != nil || lookups != before {
		t.Errorf("kube-system: allowed=%v patch=%s lookups=%d", resp.Allowed, resp.Patch, lookups-before)
	}

	// A failed lookup is a failed call (the failurePolicy decides), with
	// the reason.
	body = review(t, func(req, pod map[string]any) {
		req["namespace"] = "new"
		pod["metadata"].(map[string]any)["namespace"] = "new"
	})
	status, msg := w.post(t, "application/json", body)
	if status != http.StatusInternalServerError || !strings.Contains(string(msg), `cannot read namespace "new": namespace not in cache`) {
		t.Errorf("lookup failure: %d %s", status, msg)
	}
	if got := w.count(ResultError); got != 1 {
		t.Errorf("error count %v", got)
	}
}

func TestWebhookSkipsAndDenies(t *testing.T) {
	w := startWebhook(t, Config{})
	for _, tc := range []struct {
		name string
		edit func(req, pod map[string]any)
	}{
		{"update", func(req, _ map[string]any) { req["operation"] = "UPDATE" }},
		{"not a pod", func(req, _ map[string]any) {
			req["kind"] = map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"}
		}},
		{"subresource", func(req, _ map[string]any) { req["subResource"] = "ephemeralcontainers" }},
		{"disabled", func(_, pod map[string]any) { annotations(pod)[k8slabels.AnnotationInject] = k8slabels.InjectDisabled }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := w.call(t, "application/json", review(t, tc.edit))
			if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
				t.Errorf("allowed=%v patch=%s", resp.Allowed, resp.Patch)
			}
		})
	}
	if got := w.count(ResultSkipped); got != 4 {
		t.Errorf("skipped count %v", got)
	}

	body := review(t, func(_, pod map[string]any) {
		annotations(pod)[k8slabels.AnnotationSkipInboundPorts] = "80,eighty"
		annotations(pod)[k8slabels.AnnotationSidecarMode] = "sidecar"
	})
	resp := w.call(t, "application/json; charset=utf-8", body)
	if resp.Allowed || resp.Patch != nil || resp.Result == nil || resp.Result.Code != 422 {
		t.Fatalf("bad annotations: %+v", resp)
	}
	for _, want := range []string{k8slabels.AnnotationSkipInboundPorts, `"eighty" is not a port`, k8slabels.AnnotationSidecarMode} {
		if !strings.Contains(resp.Result.Message, want) {
			t.Errorf("denial %q lacks %q", resp.Result.Message, want)
		}
	}
	if got := w.count(ResultDenied); got != 1 {
		t.Errorf("denied count %v", got)
	}
}

func TestWebhookBadRequests(t *testing.T) {
	w := startWebhook(t, Config{})
	good := review(t, nil)
	tests := []struct {
		name, contentType string
		body              []byte
		status            int
		msg               string
	}{
		{"not json", "application/json", []byte("hello"), 400, "decode AdmissionReview"},
		{"empty", "application/json", nil, 400, "decode AdmissionReview"},
		{"v1beta1", "application/json", bytes.Replace(good, []byte(`admission.k8s.io/v1"`), []byte(`admission.k8s.io/v1beta1"`), 1), 400, "want apiVersion admission.k8s.io/v1"},
		{"no request", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), 400, "no request"},
		{"no uid", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}`), 400, "no uid"},
		{"wrong content type", "text/plain", good, 415, "application/json"},
		{"too large", "application/json", append(append([]byte(`{"x":"`), bytes.Repeat([]byte("a"), maxBodyBytes)...), `"}`...), 413, "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := w.post(t, tt.contentType, tt.body)
			if status != tt.status || !strings.Contains(string(body), tt.msg) {
				t.Errorf("got %d %q, want %d with %q", status, body, tt.status, tt.msg)
			}
		})
	}
	if got := w.count(ResultBadRequest); got != float64(len(tests)) {
		t.Errorf("bad_request count %v, want %d", got, len(tests))
	}

	// An undecodable pod inside a valid review is denied, not crashed on.
	body := review(t, func(req, _ map[string]any) { req["object"] = map[string]any{"spec": "nope"} })
	resp := w.call(t, "application/json", body)
	if resp.Allowed || !strings.Contains(resp.Result.Message, "cannot decode the pod") {
		t.Errorf("bad pod: %+v", resp.Result)
	}

	// Other methods and paths.
	resp2, err := w.srv.Client().Get(w.srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s: %d", Path, resp2.StatusCode)
	}
}

func TestNewHandlerSharesRegisteredMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewHandler(Config{Registerer: reg})
	// A second handler in the same process (a restarted server) counts
	// on the series already registered instead of failing.
	srv := httptest.NewTLSServer(NewHandler(Config{Registerer: reg}))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+Path, "application/json", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	w := &webhook{srv: srv, reg: reg}
	if got := w.count(ResultBadRequest); got != 1 {
		t.Errorf("bad_request = %v", got)
	}
	if got := w.count(ResultInjected); got != 0 {
		t.Errorf("injected = %v (series should exist at zero)", got)
	}
}
