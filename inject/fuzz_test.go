package inject

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "80", "80,443", " 8080 , 9090 ", "80,,81", "0", "65535", "65536", "-1", "1e3", "80,80", "４４３", ","} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ports, err := ParsePorts(s)
		if err != nil {
			if ports != nil {
				t.Fatal("ports with an error")
			}
			return
		}
		if !slices.IsSorted(ports) || len(slices.Compact(slices.Clone(ports))) != len(ports) {
			t.Fatalf("%q -> %v not sorted and distinct", s, ports)
		}
		for _, p := range ports {
			if p < 1 || p > 65535 {
				t.Fatalf("%q -> port %d", s, p)
			}
		}
		again, err := ParsePorts(FormatPorts(ports))
		if err != nil || !reflect.DeepEqual(again, ports) {
			t.Fatalf("round trip %v -> %v %v", ports, again, err)
		}
	})
}

func FuzzParseOptions(f *testing.F) {
	f.Add("native", "init", "10m", "", "20Mi", "64Mi", "80", "", "5432")
	f.Add("classic", "cni", "1", "2", "1Gi", "2Gi", "", "443,80", "")
	f.Add("x", "y", "-1", "0", "1e400", "lots", "80,,", "99999", "a")
	f.Fuzz(func(t *testing.T, mode, redirect, cpuReq, cpuLim, memReq, memLim, skipIn, skipOut, opaque string) {
		ann := map[string]string{}
		for k, v := range map[string]string{
			k8slabels.AnnotationSidecarMode: mode, k8slabels.AnnotationRedirect: redirect,
			k8slabels.AnnotationProxyCPURequest: cpuReq, k8slabels.AnnotationProxyCPULimit: cpuLim,
			k8slabels.AnnotationProxyMemRequest: memReq, k8slabels.AnnotationProxyMemLimit: memLim,
			k8slabels.AnnotationSkipInboundPorts: skipIn, k8slabels.AnnotationSkipOutboundPorts: skipOut, k8slabels.AnnotationOpaquePorts: opaque,
		} {
			if v != "" {
				ann[k] = v
			}
		}
		opts, err := ParseOptions(ann)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			// And the same input through Mutate is a denial, not a crash.
			ann[k8slabels.AnnotationInject] = k8slabels.InjectEnabled
			if _, err := New(Config{}).Mutate(testPod(ann), "shop", nil); err == nil {
				t.Fatal("Mutate accepted what ParseOptions refused")
			}
			return
		}
		if opts.Sidecar != k8slabels.SidecarNative && opts.Sidecar != k8slabels.SidecarClassic || opts.Redirect != k8slabels.RedirectInit && opts.Redirect != k8slabels.RedirectCNI {
			t.Fatalf("options %+v", opts)
		}
		for _, name := range []string{"cpu", "memory"} {
			req, okR := opts.Resources.Requests[corev1ResourceName(name)]
			lim, okL := opts.Resources.Limits[corev1ResourceName(name)]
			if okR && okL && req.Cmp(lim) > 0 {
				t.Fatalf("%s request %s > limit %s accepted", name, req.String(), lim.String())
			}
		}
		ann[k8slabels.AnnotationInject] = k8slabels.InjectEnabled
		res, err := New(Config{}).Mutate(testPod(ann), "shop", nil)
		if err != nil || !res.Injected {
			t.Fatalf("Mutate with valid options: %v", err)
		}
		// The injected pod is a well-formed JSON patch away from the
		// original.
		raw, err := json.Marshal(testPod(ann))
		if err != nil {
			t.Fatal(err)
		}
		_, patched, err := PatchFor(raw, testPod(ann), res.Pod)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(res.Pod)
		if !jsonpatch.Equal(patched, want) {
			t.Fatalf("patched pod differs from the mutated one")
		}
	})
}

func FuzzDiff(f *testing.F) {
	f.Add(`{"a":1,"b":[1,2,3]}`, `{"a":2,"b":[0,1,3],"c":{"d/e~f":null}}`)
	f.Add(`{"spec":{"containers":[{"name":"app"}]}}`, `{"spec":{"containers":[{"name":"p"},{"name":"app"}]}}`)
	f.Add(`{"x":[[1],[2]]}`, `{"x":[[2],[1],{}]}`)
	f.Add(`{}`, `{"":""}`)
	f.Fuzz(func(t *testing.T, from, to string) {
		a, errA := canonical(from)
		b, errB := canonical(to)
		if errA != nil || errB != nil {
			if _, err := Diff([]byte(from), []byte(to)); err == nil && (errA != nil && !json.Valid([]byte(from)) || errB != nil && !json.Valid([]byte(to))) {
				t.Fatal("Diff accepted invalid JSON")
			}
			return
		}
		ops, err := Diff(a, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) == 0 {
			if !jsonpatch.Equal(a, b) {
				t.Fatalf("no ops but %s != %s", a, b)
			}
			return
		}
		out := applyPatch(t, a, ops)
		if !jsonpatch.Equal(out, b) {
			t.Fatalf("diff(%s, %s) applied gives %s", a, b, out)
		}
	})
}

// canonical re-encodes an object document (duplicate keys resolved, as
// both Diff and the applier would disagree on them otherwise).
func canonical(s string) ([]byte, error) {
	v, err := decodeJSON([]byte(s))
	if err != nil {
		return nil, err
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, os.ErrInvalid // the root of a pod patch is always an object
	}
	return json.Marshal(v)
}

func FuzzHandleReview(f *testing.F) {
	good, err := os.ReadFile("testdata/review-create-pod.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(bytes.Replace(good, []byte(`"enabled"`), []byte(`"maybe"`), 1))
	f.Add(bytes.Replace(good, []byte(`"CREATE"`), []byte(`"DELETE"`), 1))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":null}}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":{"trellis.io/inject":"enabled"}}}}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"request":1}`))
	h := NewHandler(Config{Logger: discardLogger()})
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
		case http.StatusBadRequest:
			if !strings.HasPrefix(rec.Body.String(), "trellis injector: ") {
				t.Fatalf("400 without a message: %q", rec.Body)
			}
			return
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
		var rv admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &rv); err != nil || rv.Response == nil {
			t.Fatalf("response %s: %v", rec.Body, err)
		}
		in, err := DecodeReview(body)
		if err != nil {
			t.Fatalf("200 for a review DecodeReview refuses: %v", err)
		}
		if rv.Response.UID != in.Request.UID {
			t.Fatal("uid not echoed")
		}
		if !rv.Response.Allowed && (rv.Response.Result == nil || rv.Response.Result.Message == "") {
			t.Fatal("denial without a message")
		}
		if rv.Response.Patch != nil {
			p, err := jsonpatch.DecodePatch(rv.Response.Patch)
			if err != nil {
				t.Fatalf("patch %s: %v", rv.Response.Patch, err)
			}
			if _, err := p.Apply(in.Request.Object.Raw); err != nil {
				t.Fatalf("patch does not apply to the request's object: %v", err)
			}
		}
	})
}
