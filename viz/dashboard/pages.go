package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trellis-mesh/trellis/viz/model"
	"github.com/trellis-mesh/trellis/viz/prom"
)

// Docs the empty and error states link to: each anchor is a subsection of
// the dashboard's section of docs/observability.md that says why and what
// to do.
const (
	docDashboard   = "observability.md#dashboard"
	docNoTraffic   = "observability.md#dashboard-no-traffic"
	docNoSource    = "observability.md#dashboard-metrics-unavailable"
	docNoEdges     = "observability.md#dashboard-no-edges"
	docNoRoutes    = "observability.md#dashboard-no-routes"
	docTap         = "observability.md#dashboard-tap"
	docNoIdentity  = "observability.md#dashboard-identities"
	docNoDecisions = "observability.md#dashboard-policy-decisions"
	docNotMeshed   = "observability.md#dashboard-not-meshed"
)

// problem is an empty or error state: what happened and the doc that
// explains it.
type problem struct {
	Message string
	Doc     string
}

// view is what every page's template gets.
type view struct {
	Title     string
	Page      string
	Heading   string
	Local     bool
	Namespace string
	Window    string
	// Refresh in seconds (0: the page does not reload itself).
	Refresh int
	Problem *problem
	Data    any
}

type pages struct {
	t map[string]*template.Template
}

var funcs = template.FuncMap{
	"doc":     func(anchor string) string { return DocBase + anchor },
	"pct":     fmtPct,
	"ms":      fmtMs,
	"rps":     func(v float64) string { return strconv.FormatFloat(v, 'f', 2, 64) },
	"count":   func(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) },
	"res":     resourceString,
	"meshed":  meshedString,
	"expires": expiresString,
	"lower":   strings.ToLower,
}

func newPages() (*pages, error) {
	p := &pages{t: map[string]*template.Template{}}
	for _, name := range []string{"overview", "edges", "routes", "tap", "identity", "policy"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", name, err)
		}
		p.t[name] = t
	}
	return p, nil
}

// render writes the page whole or, when the template fails, a 500: never
// half a page.
func (h *Handler) render(w http.ResponseWriter, v view) {
	v.Title = h.cfg.Title
	v.Local = h.cfg.Local
	v.Window = h.cfg.Window.String()
	var buf bytes.Buffer
	if err := h.pages.t[v.Page].Execute(&buf, v); err != nil {
		h.cfg.Logger.Error("dashboard: render", "page", v.Page, "err", err)
		http.Error(w, "internal error rendering the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

// sourceProblem explains a Source that failed.
func sourceProblem(what string, err error) *problem {
	return &problem{Message: fmt.Sprintf("cannot read the %s: %v", what, err), Doc: docNoSource}
}

// workloadKind is the kind the pages list: deployments, or the local
// mode's workloads.
func (h *Handler) workloadKind() string {
	if h.cfg.Local {
		return "workloads"
	}
	return "deployments"
}

// namespace is the ?ns= of a request, checked as a DNS label (it is
// echoed in links and sent to the Source).
func (h *Handler) namespace(r *http.Request) (string, *problem) {
	ns := r.URL.Query().Get("ns")
	if h.cfg.Local || ns == "" {
		return "", nil
	}
	if !isDNSLabel(ns) {
		return "", &problem{Message: fmt.Sprintf("namespace %q is not a valid namespace name", ns), Doc: docDashboard}
	}
	return ns, nil
}

func (h *Handler) query(kind, ns string) model.Query {
	return model.Query{Resource: model.Resource{Kind: kind, Namespace: ns}, Window: h.cfg.Window}
}

type overviewData struct {
	Namespaces []model.WorkloadStat
	Workloads  []model.WorkloadStat
	// Idle: the Source answered but no workload served a request.
	Idle bool
}

func (h *Handler) overview(w http.ResponseWriter, r *http.Request) {
	v := view{Page: "overview", Heading: "Workloads", Refresh: h.refresh()}
	ns, prob := h.namespace(r)
	v.Namespace, v.Problem = ns, prob
	d := overviewData{}
	if prob == nil {
		d, v.Problem = h.overviewData(r.Context(), ns)
	}
	v.Data = d
	h.render(w, v)
}

func (h *Handler) overviewData(ctx context.Context, ns string) (overviewData, *problem) {
	var d overviewData
	if !h.cfg.Local && ns == "" {
		nss, err := h.cfg.Source.Stat(ctx, h.query("namespaces", ""))
		if err != nil {
			return d, sourceProblem("namespaces' metrics", err)
		}
		d.Namespaces = sortStats(nss)
	}
	wls, err := h.cfg.Source.Stat(ctx, h.query(h.workloadKind(), ns))
	if err != nil {
		return d, sourceProblem("workloads' metrics", err)
	}
	d.Workloads = sortStats(wls)
	d.Idle = !slices.ContainsFunc(d.Workloads, func(s model.WorkloadStat) bool { return s.Requests > 0 })
	if len(d.Workloads) == 0 {
		return d, &problem{Message: "no meshed workload reports metrics", Doc: docNotMeshed}
	}
	if d.Idle {
		return d, &problem{Message: "no workload served a request in the last " + h.cfg.Window.String(), Doc: docNoTraffic}
	}
	return d, nil
}

func sortStats(s []model.WorkloadStat) []model.WorkloadStat {
	slices.SortFunc(s, func(a, b model.WorkloadStat) int {
		return strings.Compare(resourceString(a.Resource), resourceString(b.Resource))
	})
	return s
}

func (h *Handler) refresh() int { return int(h.cfg.Refresh.Round(time.Second) / time.Second) }

type edgesData struct {
	Edges []model.Edge
	Graph graph
}

// list is a page that shows one list: where it comes from and what its
// absence means.
type list[T any] struct {
	page, heading string
	// what is read ("the edges"); empty says why there is none.
	what, empty string
	// errDoc explains a failed load, emptyDoc an empty list or no source.
	errDoc, emptyDoc string
	// load is nil when the dashboard has no source of this list.
	load func(ctx context.Context, ns string) ([]T, error)
	cmp  func(a, b T) int
	// data is what the template gets (default: the sorted list).
	data func([]T) any
}

func serveList[T any](h *Handler, w http.ResponseWriter, r *http.Request, l list[T]) {
	v := view{Page: l.page, Heading: l.heading, Refresh: h.refresh()}
	v.Namespace, v.Problem = h.namespace(r)
	if v.Problem == nil {
		v.Data, v.Problem = loadList(r.Context(), v.Namespace, l)
	}
	h.render(w, v)
}

func loadList[T any](ctx context.Context, ns string, l list[T]) (any, *problem) {
	if l.load == nil {
		return nil, &problem{Message: "this dashboard has no source of " + l.what, Doc: l.emptyDoc}
	}
	items, err := l.load(ctx, ns)
	switch {
	case err != nil:
		return nil, &problem{Message: fmt.Sprintf("cannot read %s: %v", l.what, err), Doc: l.errDoc}
	case len(items) == 0:
		return nil, &problem{Message: l.empty, Doc: l.emptyDoc}
	}
	slices.SortFunc(items, l.cmp)
	if l.data != nil {
		return l.data(items), nil
	}
	return items, nil
}

func (h *Handler) edges(w http.ResponseWriter, r *http.Request) {
	var backends map[model.Resource][]model.Resource
	serveList(h, w, r, list[model.Edge]{
		page: "edges", heading: "Edges", what: "the edges", errDoc: docNoSource, emptyDoc: docNoEdges,
		empty: "no workload called another in the last " + h.cfg.Window.String(),
		load: func(ctx context.Context, ns string) ([]model.Edge, error) {
			edges, err := h.cfg.Source.Edges(ctx, h.query(h.workloadKind(), ns))
			if err == nil {
				backends = h.backends(ctx, ns, edges)
			}
			return edges, err
		},
		cmp: func(a, b model.Edge) int {
			return strings.Compare(resourceString(a.Src)+" "+resourceString(a.Dst), resourceString(b.Src)+" "+resourceString(b.Dst))
		},
		data: func(edges []model.Edge) any { return edgesData{Edges: edges, Graph: layout(edges, backends)} },
	})
}

// backends are the workloads behind each service an edge ends at (a
// service with several workloads: the demo's books), from the routes they
// serve; best effort: without them the graph ends at the service.
func (h *Handler) backends(ctx context.Context, ns string, edges []model.Edge) map[model.Resource][]model.Resource {
	if !slices.ContainsFunc(edges, func(e model.Edge) bool { return e.Dst.Kind == "services" }) {
		return nil
	}
	routes, err := h.cfg.Source.Routes(ctx, h.query(h.workloadKind(), ns))
	if err != nil {
		return nil
	}
	out := map[model.Resource][]model.Resource{}
	for _, rt := range routes {
		if rt.Authority == "" || rt.Direction == model.DirectionOutbound {
			continue // a client's routes say nothing of who serves
		}
		svc := prom.ServiceOf(rt.Authority, rt.Resource.Namespace)
		if h.cfg.Local {
			svc.Namespace = "" // local mode's service resources have none
		}
		if !slices.Contains(out[svc], rt.Resource) {
			out[svc] = append(out[svc], rt.Resource)
		}
	}
	return out
}

func (h *Handler) routes(w http.ResponseWriter, r *http.Request) {
	serveList(h, w, r, list[model.RouteStat]{
		page: "routes", heading: "Routes", what: "the routes", errDoc: docNoSource, emptyDoc: docNoRoutes,
		empty: "no route served a request in the last " + h.cfg.Window.String(),
		load: func(ctx context.Context, ns string) ([]model.RouteStat, error) {
			return h.cfg.Source.Routes(ctx, h.query(h.workloadKind(), ns))
		},
		cmp: func(a, b model.RouteStat) int {
			// Per workload, what it served then what it sent, by route.
			return cmp.Or(strings.Compare(resourceString(a.Resource), resourceString(b.Resource)),
				strings.Compare(a.Direction, b.Direction), strings.Compare(a.Authority, b.Authority),
				strings.Compare(a.Route, b.Route), strings.Compare(a.Rule, b.Rule), strings.Compare(a.Backend, b.Backend))
		},
	})
}

func (h *Handler) identity(w http.ResponseWriter, r *http.Request) {
	l := list[Identity]{
		page: "identity", heading: "Identities", what: "the identities", errDoc: docNoIdentity, emptyDoc: docNoIdentity,
		empty: "no proxy reports a certificate",
		cmp:   func(a, b Identity) int { return a.NotAfter.Compare(b.NotAfter) }, // the soonest to expire first
	}
	if h.cfg.Identities != nil {
		l.load = h.cfg.Identities.Identities
	}
	serveList(h, w, r, l)
}

func (h *Handler) policy(w http.ResponseWriter, r *http.Request) {
	l := list[Decision]{
		page: "policy", heading: "Policy decisions", what: "the policy decisions", errDoc: docNoDecisions, emptyDoc: docNoDecisions,
		empty: "no inbound authorization decision in the last " + h.cfg.Window.String(),
		cmp:   func(a, b Decision) int { return strings.Compare(decisionKey(a), decisionKey(b)) },
	}
	if h.cfg.Decisions != nil {
		l.load = func(ctx context.Context, ns string) ([]Decision, error) {
			return h.cfg.Decisions.Decisions(ctx, ns, h.cfg.Window)
		}
	}
	serveList(h, w, r, l)
}

func decisionKey(d Decision) string {
	// Denials first: they are what a reader looks for.
	order := map[string]string{"deny": "0", "audit": "1", "allow": "2"}[d.Decision]
	return order + resourceString(d.Resource) + " " + d.Server + " " + d.Route + " " + d.ClientID
}

func fmtPct(v *float64) string {
	if v == nil {
		return "-"
	}
	return strconv.FormatFloat(100**v, 'f', 2, 64) + "%"
}

func fmtMs(v *float64) string {
	if v == nil {
		return "-"
	}
	prec := 0
	if *v < 10 {
		prec = 1 // sub-millisecond latencies are common on loopback
	}
	return strconv.FormatFloat(*v, 'f', prec, 64) + " ms"
}

func resourceString(r model.Resource) string {
	name := r.Name
	if r.Kind != "" && r.Kind != "workloads" {
		name = r.Kind + "/" + name
	}
	if r.Namespace != "" {
		return r.Namespace + "/" + name
	}
	return name
}

func meshedString(s model.WorkloadStat) string {
	if s.TotalPods == 0 {
		if s.MeshedPods == 0 {
			return "-"
		}
		return strconv.Itoa(s.MeshedPods)
	}
	return fmt.Sprintf("%d/%d", s.MeshedPods, s.TotalPods)
}

// expiresString is the time left before notAfter, as a reader wants it.
func expiresString(notAfter time.Time) string {
	if notAfter.IsZero() {
		return "unknown"
	}
	left := time.Until(notAfter)
	if left <= 0 {
		return "expired " + (-left).Round(time.Second).String() + " ago"
	}
	return "in " + left.Round(time.Second).String()
}

// isDNSLabel: RFC 1123 label, what a namespace name is.
func isDNSLabel(s string) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}
