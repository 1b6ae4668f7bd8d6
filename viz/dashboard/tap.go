package dashboard

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
)

// tapMaxRPS is the rate the dashboard asks the proxies for: a page shows
// a few hundred rows at most, and tap must never weigh on the data plane.
const tapMaxRPS = 50

// maxFilterLen bounds each filter value (a path prefix is the longest).
const maxFilterLen = 1024

// tapFilter is the tap page's form: the query of /tap and /api/tap.
type tapFilter struct {
	Namespace, Target, Method, Path, Authority, Direction, From, To string
}

func parseTapFilter(q url.Values, local bool) (tapFilter, model.TapRequest, error) {
	f := tapFilter{
		Namespace: q.Get("ns"), Target: q.Get("target"), Method: q.Get("method"), Path: q.Get("path"),
		Authority: q.Get("authority"), Direction: q.Get("direction"), From: q.Get("from"), To: q.Get("to"),
	}
	for name, v := range map[string]string{"ns": f.Namespace, "target": f.Target, "method": f.Method, "path": f.Path,
		"authority": f.Authority, "direction": f.Direction, "from": f.From, "to": f.To} {
		if len(v) > maxFilterLen {
			return f, model.TapRequest{}, fmt.Errorf("%s: longer than %d bytes", name, maxFilterLen)
		}
	}
	target, err := parseTarget(f.Target, f.Namespace, local)
	if err != nil {
		return f, model.TapRequest{}, err
	}
	if f.Method != "" && !isToken(f.Method) {
		return f, model.TapRequest{}, fmt.Errorf("method %q is not an HTTP method", f.Method)
	}
	if f.Path != "" && !strings.HasPrefix(f.Path, "/") {
		return f, model.TapRequest{}, fmt.Errorf("path %q: a path prefix starts with /", f.Path)
	}
	if f.Direction != "" && f.Direction != "inbound" && f.Direction != "outbound" {
		return f, model.TapRequest{}, fmt.Errorf("direction %q: want inbound, outbound or empty (both)", f.Direction)
	}
	req := model.TapRequest{Target: target, Observe: &apiv1.ObserveRequest{
		MaxRps: tapMaxRPS,
		Match: &apiv1.TapMatch{Authority: f.Authority, PathPrefix: f.Path, Method: strings.ToUpper(f.Method),
			Direction: f.Direction, FromIdentity: f.From, ToIdentity: f.To},
	}}
	return f, req, nil
}

// kinds maps kubectl's names of the tappable resources to their plural.
var kinds = map[string]string{
	"po": "pods", "pod": "pods", "pods": "pods",
	"deploy": "deployments", "deployment": "deployments", "deployments": "deployments",
	"sts": "statefulsets", "statefulset": "statefulsets", "statefulsets": "statefulsets",
	"ds": "daemonsets", "daemonset": "daemonsets", "daemonsets": "daemonsets",
	"rs": "replicasets", "replicaset": "replicasets", "replicasets": "replicasets",
	"job": "jobs", "jobs": "jobs",
}

// parseTarget reads a tap target: KIND/NAME on Kubernetes ("" = the whole
// namespace), a workload's name in local mode.
func parseTarget(s, ns string, local bool) (model.Resource, error) {
	if local {
		if !isDNSLabel(s) {
			return model.Resource{}, fmt.Errorf("target %q: choose a workload", s)
		}
		return model.Resource{Kind: "workloads", Name: s}, nil
	}
	if !isDNSLabel(ns) {
		return model.Resource{}, fmt.Errorf("namespace %q: choose a namespace", ns)
	}
	if s == "" {
		return model.Resource{Kind: "namespaces", Namespace: ns, Name: ns}, nil
	}
	kind, name, ok := strings.Cut(s, "/")
	plural := kinds[strings.ToLower(kind)]
	if !ok || plural == "" || !isDNSSubdomain(name) {
		return model.Resource{}, fmt.Errorf("target %q: want KIND/NAME, e.g. deploy/web (kinds: pods, deployments, statefulsets, daemonsets, replicasets, jobs)", s)
	}
	return model.Resource{Kind: plural, Namespace: ns, Name: name}, nil
}

func isDNSSubdomain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for l := range strings.SplitSeq(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}

// isToken: an RFC 9110 token, what a method is.
func isToken(s string) bool {
	for _, c := range []byte(s) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return s != "" && len(s) <= 32
}

// tapRow is one tap event as the page's script shows it: strings and
// numbers only, rendered with textContent.
type tapRow struct {
	// Key joins a request's events: pod and stream id.
	Key       string  `json:"key"`
	Kind      string  `json:"kind"` // request, response, end
	Time      string  `json:"time"`
	Direction string  `json:"direction"`
	Namespace string  `json:"namespace,omitempty"`
	Pod       string  `json:"pod,omitempty"`
	Source    string  `json:"source"`
	Dest      string  `json:"destination"`
	SrcID     string  `json:"sourceIdentity"`
	DstID     string  `json:"destinationIdentity"`
	TLS       bool    `json:"tls"`
	Route     string  `json:"route,omitempty"`
	Method    string  `json:"method,omitempty"`
	Authority string  `json:"authority,omitempty"`
	Path      string  `json:"path,omitempty"`
	Status    uint32  `json:"status,omitempty"`
	GRPC      *int32  `json:"grpcStatus,omitempty"`
	LatencyMs float64 `json:"latencyMs,omitempty"`
	Bytes     uint64  `json:"bytes,omitempty"`
	Error     string  `json:"error,omitempty"`
}

func newTapRow(e *apiv1.TapEvent) (tapRow, bool) {
	r := tapRow{
		Key:       fmt.Sprintf("%s/%s/%d", e.GetNamespace(), e.GetPod(), e.GetId()),
		Time:      e.GetTime().AsTime().UTC().Format("15:04:05.000"),
		Direction: e.GetDirection(), Namespace: e.GetNamespace(), Pod: e.GetPod(),
		Source: e.GetSource(), Dest: e.GetDestination(), SrcID: e.GetSourceIdentity(), DstID: e.GetDestinationIdentity(),
		TLS: e.GetTls(), Route: e.GetRoute(),
	}
	switch {
	case e.GetRequestInit() != nil:
		ri := e.GetRequestInit()
		r.Kind, r.Method, r.Authority, r.Path = "request", ri.GetMethod(), ri.GetAuthority(), ri.GetPath()
	case e.GetResponseInit() != nil:
		r.Kind, r.Status = "response", e.GetResponseInit().GetHttpStatus()
		r.LatencyMs = float64(e.GetResponseInit().GetSinceRequestInit().AsDuration()) / float64(time.Millisecond)
	case e.GetResponseEnd() != nil:
		re := e.GetResponseEnd()
		r.Kind, r.Bytes, r.Error = "end", re.GetResponseBytes(), re.GetError()
		r.LatencyMs = float64(re.GetSinceRequestInit().AsDuration()) / float64(time.Millisecond)
		if g := re.GetGrpcStatus(); g >= 0 {
			r.GRPC = &g
		}
	default:
		return r, false
	}
	return r, true
}

func (h *Handler) tapPage(w http.ResponseWriter, r *http.Request) {
	v := view{Page: "tap", Heading: "Live tap"}
	f, _, err := parseTapFilter(r.URL.Query(), h.cfg.Local)
	v.Namespace = f.Namespace
	d := tapPageData{Filter: f}
	switch {
	case h.cfg.Tapper == nil:
		v.Problem = &problem{Message: "this dashboard cannot tap", Doc: docTap}
	case err == nil:
		d.Stream = "/api/tap?" + r.URL.RawQuery
	case r.URL.RawQuery != "":
		v.Problem = &problem{Message: err.Error(), Doc: docTap}
	}
	if stats, serr := h.cfg.Source.Stat(r.Context(), h.query(h.workloadKind(), f.Namespace)); serr == nil {
		for _, s := range sortStats(stats) {
			d.Targets = append(d.Targets, h.targetName(s.Resource))
		}
	}
	v.Data = d
	h.render(w, v)
}

type tapPageData struct {
	Filter  tapFilter
	Targets []string
	// Stream is the event stream's URL ("" until the form names a target).
	Stream string
}

func (h *Handler) targetName(r model.Resource) string {
	if h.cfg.Local {
		return r.Name
	}
	return "deploy/" + r.Name
}

// tapStream serves one tap as Server-Sent Events: "tap" events (a tapRow),
// then "failure" (the error and its doc) or "end".
func (h *Handler) tapStream(w http.ResponseWriter, r *http.Request) {
	_, req, err := parseTapFilter(r.URL.Query(), h.cfg.Local)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if h.cfg.Tapper == nil {
		http.Error(w, "this dashboard cannot tap", http.StatusNotImplemented)
		return
	}
	select {
	case h.taps <- struct{}{}:
		defer func() { <-h.taps }()
	default:
		http.Error(w, fmt.Sprintf("%d taps are open already: close one", cap(h.taps)), http.StatusTooManyRequests)
		return
	}
	s := &sse{w: w, rc: http.NewResponseController(w)}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	if err := s.send("open", map[string]string{"target": resourceString(req.Target)}); err != nil {
		return
	}
	ctx := r.Context()
	stop := s.heartbeat(ctx.Done())
	defer stop()
	err = h.cfg.Tapper.Tap(ctx, req, func(e *apiv1.TapEvent) error {
		row, ok := newTapRow(e)
		if !ok {
			return nil
		}
		return s.send("tap", row)
	})
	switch {
	case ctx.Err() != nil: // the page went away
	case err != nil:
		h.cfg.Logger.Warn("dashboard: tap failed", "target", resourceString(req.Target), "err", err)
		_ = s.send("failure", problem{Message: "tap " + resourceString(req.Target) + ": " + err.Error(), Doc: DocBase + docTap})
	default:
		_ = s.send("end", struct{}{})
	}
}

// sse writes events; a write that blocks past writeTimeout ends the tap
// (a page that stopped reading must not hold a stream open).
type sse struct {
	mu sync.Mutex
	w  http.ResponseWriter
	rc *http.ResponseController
}

const writeTimeout = 10 * time.Second

var errStalled = errors.New("the page stopped reading")

func (s *sse) send(event string, v any) error {
	b, err := json.Marshal(v) // escapes <, > and &: inert even as HTML
	if err != nil {
		return err
	}
	return s.write("event: " + event + "\ndata: " + string(b) + "\n\n")
}

func (s *sse) write(msg string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := s.w.Write([]byte(msg)); err != nil {
		return fmt.Errorf("%w: %w", errStalled, err)
	}
	return s.rc.Flush()
}

// heartbeat writes a comment every 15s so a dead connection is noticed
// even when no request matches.
func (s *sse) heartbeat(done <-chan struct{}) func() {
	stop, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = s.write(": keep-alive\n\n")
			case <-done:
				return
			case <-stop:
				return
			}
		}
	}()
	// Wait for it: nothing may write once the handler has returned.
	return func() { close(stop); <-exited }
}
