package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/trellis-mesh/trellis/internal/k8slabels"
)

// Path is where NewHandler serves admission requests.
const Path = "/inject"

// maxBodyBytes bounds an AdmissionReview. The API server limits objects
// to about 3 MiB; a review may carry the object twice.
const maxBodyBytes = 8 << 20

// Values of the result label of trellis_injector_requests_total.
const (
	ResultInjected   = "injected"    // patched
	ResultSkipped    = "skipped"     // allowed unchanged: not opted in, excluded, already injected, not a pod CREATE
	ResultDenied     = "denied"      // malformed annotations or a conflicting pod
	ResultError      = "error"       // could not decide (namespace lookup, internal error)
	ResultBadRequest = "bad_request" // not a valid admission.k8s.io/v1 AdmissionReview
)

// NewHandler returns the mutating admission webhook: POST Path with an
// admission.k8s.io/v1 AdmissionReview answers with the review's response,
// a JSONPatch when the pod is injected. Anything else under the handler
// is 404. Serve it over TLS (the API server insists).
func NewHandler(cfg Config) http.Handler {
	inj := New(cfg)
	h := &handler{inj: inj, log: inj.cfg.Logger}
	h.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trellis_injector_requests_total",
		Help: "Admission requests handled by the proxy injector, by result.",
	}, []string{"result"})
	if r := inj.cfg.Registerer; r != nil {
		if err := r.Register(h.requests); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
					h.requests = existing
				}
			} else {
				h.log.Error("injector: cannot register metrics", "err", err)
			}
		}
	}
	for _, r := range []string{ResultInjected, ResultSkipped, ResultDenied, ResultError, ResultBadRequest} {
		h.requests.WithLabelValues(r) // every series exists from the start
	}
	mux := http.NewServeMux()
	mux.Handle("POST "+Path, h)
	return mux
}

type handler struct {
	inj      *Injector
	log      *slog.Logger
	requests *prometheus.CounterVec
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	review, err := decodeReview(w, r)
	if err != nil {
		h.requests.WithLabelValues(ResultBadRequest).Inc()
		h.log.Warn("injector: bad admission request", "remote", r.RemoteAddr, "err", err)
		status := http.StatusBadRequest
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			status = http.StatusRequestEntityTooLarge
		} else if errors.Is(err, errContentType) {
			status = http.StatusUnsupportedMediaType
		}
		http.Error(w, "trellis injector: "+err.Error(), status)
		return
	}
	resp, result, err := h.review(r, review.Request)
	h.requests.WithLabelValues(result).Inc()
	if err != nil {
		// A failed call, not a denial: the API server then applies the
		// webhook's failurePolicy (Ignore: the pod is created without a
		// proxy; Fail with --ha: it is refused with this message).
		http.Error(w, "trellis injector: "+err.Error(), http.StatusInternalServerError)
		return
	}
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: resp,
	}
	body, err := json.Marshal(out)
	if err != nil { // cannot happen with these types; never crash on it
		h.log.Error("injector: marshal response", "err", err)
		http.Error(w, "trellis injector: internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

var errContentType = errors.New("content type must be application/json")

// DecodeReview parses an admission.k8s.io/v1 AdmissionReview request
// body, refusing anything that is not one.
func DecodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return nil, fmt.Errorf("decode AdmissionReview: %w", err)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		return nil, fmt.Errorf("want apiVersion admission.k8s.io/v1 kind AdmissionReview, got %q %q", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, errors.New("AdmissionReview has no request")
	}
	if review.Request.UID == "" {
		return nil, errors.New("AdmissionReview request has no uid")
	}
	return &review, nil
}

func decodeReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return nil, errContentType
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return DecodeReview(body)
}

// review decides one request. It allows unless the pod's annotations are
// malformed (denied); an error means it could not decide.
func (h *handler) review(r *http.Request, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string, error) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	podKind := metav1.GroupVersionKind{Group: "", Version: "v1", Kind: "Pod"}
	if req.Kind != podKind || req.Operation != admissionv1.Create || req.SubResource != "" {
		return allow, ResultSkipped, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		h.log.Warn("injector: undecodable pod", "namespace", req.Namespace, "err", err)
		return deny(http.StatusBadRequest, "trellis injector: cannot decode the pod: "+err.Error()), ResultBadRequest, nil
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Namespace
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName + "*"
	}
	log := h.log.With("namespace", ns, "pod", name, "uid", string(req.UID))

	var nsAnn map[string]string
	// Excluded namespaces are decided without a lookup.
	if lookup := h.inj.cfg.NamespaceAnnotations; lookup != nil && ns != KubeSystemNamespace && ns != k8slabels.ControlPlaneNamespace {
		var err error
		if nsAnn, err = lookup(r.Context(), ns); err != nil {
			log.Error("injector: namespace lookup failed", "err", err)
			return nil, ResultError, fmt.Errorf("cannot read namespace %q: %w", ns, err)
		}
	}
	res, err := h.inj.Mutate(&pod, ns, nsAnn)
	if err != nil {
		log.Info("injector: denied", "err", err)
		return deny(http.StatusUnprocessableEntity, "trellis injector: "+err.Error()), ResultDenied, nil
	}
	allow.Warnings = res.Warnings
	if !res.Injected {
		log.Debug("injector: not injected", "reason", res.Reason)
		return allow, ResultSkipped, nil
	}
	patch, _, err := PatchFor(req.Object.Raw, &pod, res.Pod)
	if err != nil {
		log.Error("injector: patch", "err", err)
		return nil, ResultError, fmt.Errorf("cannot build the patch: %w", err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	log.Info("injector: injected", "reason", res.Reason)
	return allow, ResultInjected, nil
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg,
	}}
}
