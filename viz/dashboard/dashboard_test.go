package dashboard

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/viz/model"
)

// fakeSource answers from fixed rows (a unit test of the rendering).
type fakeSource struct {
	stats  map[string][]model.WorkloadStat // by Kind
	edges  []model.Edge
	routes []model.RouteStat
	err    error
	last   model.Query
}

func (f *fakeSource) Stat(_ context.Context, q model.Query) ([]model.WorkloadStat, error) {
	f.last = q
	return f.stats[q.Resource.Kind], f.err
}
func (f *fakeSource) Edges(_ context.Context, q model.Query) ([]model.Edge, error) {
	f.last = q
	return f.edges, f.err
}
func (f *fakeSource) Routes(_ context.Context, q model.Query) ([]model.RouteStat, error) {
	f.last = q
	return f.routes, f.err
}

// fakeTapper sends its events, then returns err.
type fakeTapper struct {
	events []*apiv1.TapEvent
	err    error
	got    chan model.TapRequest
	block  bool // stay open until the request ends
}

func (f *fakeTapper) Tap(ctx context.Context, req model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	if f.got != nil {
		f.got <- req
	}
	for _, e := range f.events {
		if err := fn(e); err != nil {
			return err
		}
	}
	if f.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return f.err
}

func ptr(v float64) *float64 { return &v }

// hostile is what an attacker puts where the dashboard shows a name.
const hostile = `<script>alert(1)</script><img src=x onerror=alert(2)>`

func demoSource() *fakeSource {
	return &fakeSource{stats: map[string][]model.WorkloadStat{
		"workloads": {
			{Resource: model.Resource{Kind: "workloads", Name: "web"}, MeshedPods: 1,
				Golden: model.Golden{Requests: 600, RPS: 10, SuccessRate: ptr(0.99), P50Ms: ptr(2), P95Ms: ptr(5), P99Ms: ptr(9)}},
			{Resource: model.Resource{Kind: "workloads", Name: "books"}, MeshedPods: 1,
				Golden: model.Golden{Requests: 0, RPS: 0}},
		},
	}, edges: []model.Edge{
		{Src: model.Resource{Kind: "workloads", Name: "web"}, Dst: model.Resource{Kind: "workloads", Name: "books"},
			DstIdentity: "spiffe://cluster.local/ns/demo/sa/books", MTLS: true, Golden: model.Golden{RPS: 10, SuccessRate: ptr(1)}},
		{Src: model.Resource{Kind: "workloads", Name: "books"}, Dst: model.Resource{Kind: "services", Name: hostile},
			Golden: model.Golden{RPS: 1}},
	}, routes: []model.RouteStat{
		{Resource: model.Resource{Kind: "workloads", Name: "web"}, Route: hostile, Golden: model.Golden{RPS: 3}},
		// web's outbound routes: a canary rule's two backends, one named
		// by an attacker.
		{Resource: model.Resource{Kind: "workloads", Name: "web"}, Direction: model.DirectionOutbound,
			Route: "demo/books-split", Rule: "0", Authority: "books.demo:80", Backend: "books-v1.demo:80",
			Golden: model.Golden{RPS: 9, SuccessRate: ptr(1), P50Ms: ptr(2), P95Ms: ptr(4), P99Ms: ptr(5)}},
		{Resource: model.Resource{Kind: "workloads", Name: "web"}, Direction: model.DirectionOutbound,
			Route: "demo/books-split", Rule: "0", Authority: "books.demo:80", Backend: hostile,
			Golden: model.Golden{RPS: 1, SuccessRate: ptr(0.5), P50Ms: ptr(40)}},
	}}
}

func newTest(t *testing.T, cfg Config) *Handler {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func get(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	h := newTest(t, Config{Source: demoSource(), Local: true})
	for _, path := range []string{"/", "/edges", "/routes", "/tap", "/identity", "/policy", "/static/app.js", "/static/style.css", "/favicon.ico", "/nope", "/api/tap"} {
		rec := get(t, h, path)
		if got := rec.Header().Get("Content-Security-Policy"); got != CSP {
			t.Errorf("%s: CSP %q", path, got)
		}
		if got := rec.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", path, got)
		}
		if got := rec.Header().Get("X-Frame-Options"); got != "DENY" {
			t.Errorf("%s: X-Frame-Options %q", path, got)
		}
	}
	if strings.Contains(CSP, "unsafe-inline") || strings.Contains(CSP, "unsafe-eval") || strings.Contains(CSP, "http") {
		t.Errorf("CSP allows inline script, eval or another origin: %s", CSP)
	}
}

func TestPagesHaveNoInlineScriptOrStyle(t *testing.T) {
	src := demoSource()
	src.edges[1].Dst.Name, src.routes[0].Route, src.routes[2].Backend = "authors", "[default]", "b" // no hostile text here
	h := newTest(t, Config{Source: src, Tapper: &fakeTapper{}, Local: true})
	for _, path := range []string{"/", "/edges", "/routes", "/tap?target=web", "/identity", "/policy"} {
		body := get(t, h, path).Body.String()
		if n := strings.Count(body, "<script"); n != 1 || !strings.Contains(body, `<script src="/static/app.js" defer></script>`) {
			t.Errorf("%s: want exactly the one external script, found %d <script", path, n)
		}
		for _, bad := range []string{" style=", "<style", " onclick=", " onerror=", " onload=", "javascript:"} {
			if strings.Contains(body, bad) {
				t.Errorf("%s: contains %q, which the CSP would block", path, bad)
			}
		}
	}
}

func TestHostAndMethodRefused(t *testing.T) {
	h := newTest(t, Config{Source: demoSource(), Local: true, AllowedHosts: AllowedHosts("127.0.0.1:8084")})
	for _, tc := range []struct {
		method, host string
		want         int
	}{
		{http.MethodGet, "127.0.0.1:8084", http.StatusOK},
		{http.MethodGet, "localhost:8084", http.StatusOK},
		{http.MethodGet, "LOCALHOST:8084", http.StatusOK},
		{http.MethodGet, "evil.example:8084", http.StatusMisdirectedRequest}, // DNS rebinding
		{http.MethodGet, "127.0.0.1:9999", http.StatusMisdirectedRequest},
		{http.MethodPost, "127.0.0.1:8084", http.StatusMethodNotAllowed},
		{http.MethodDelete, "127.0.0.1:8084", http.StatusMethodNotAllowed},
	} {
		req := httptest.NewRequest(tc.method, "/", nil)
		req.Host = tc.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s Host %s: %d, want %d", tc.method, tc.host, rec.Code, tc.want)
		}
	}
}

func TestAllowedHosts(t *testing.T) {
	ifaces := func() ([]net.Addr, error) {
		return []net.Addr{
			&net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)},
			&net.IPNet{IP: net.ParseIP("10.1.2.3"), Mask: net.CIDRMask(24, 32)},
			&net.IPNet{IP: net.ParseIP("2001:db8::5"), Mask: net.CIDRMask(64, 128)},
			&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)},
		}, nil
	}
	broken := func() ([]net.Addr, error) { return nil, errors.New("no interfaces") }
	unspecified := []string{"localhost:8084", "127.0.0.1:8084", "[::1]:8084", "10.1.2.3:8084", "[2001:db8::5]:8084"}
	for _, tc := range []struct {
		addr   string
		ifaces func() ([]net.Addr, error)
		want   []string
	}{
		{"127.0.0.1:8084", ifaces, []string{"127.0.0.1:8084", "localhost:8084"}},
		{"[::1]:80", ifaces, []string{"[::1]:80", "localhost:80"}},
		{"10.0.0.5:8084", ifaces, []string{"10.0.0.5:8084"}},
		{"0.0.0.0:8084", ifaces, append([]string{"0.0.0.0:8084"}, unspecified...)},
		{"[::]:8084", ifaces, append([]string{"[::]:8084"}, unspecified...)},
		{"0.0.0.0:8084", broken, []string{"0.0.0.0:8084", "localhost:8084", "127.0.0.1:8084", "[::1]:8084"}},
	} {
		if got := allowedHosts(tc.addr, tc.ifaces); strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("allowedHosts(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestUnspecifiedAddressAnswers: served on 0.0.0.0 (--address 0.0.0.0),
// the dashboard answers the names a browser uses for this host, and still
// no other (DNS rebinding).
func TestUnspecifiedAddressAnswers(t *testing.T) {
	h := newTest(t, Config{Source: demoSource(), Local: true, AllowedHosts: AllowedHosts("0.0.0.0:8084")})
	hosts := map[string]int{
		"localhost:8084": http.StatusOK, "127.0.0.1:8084": http.StatusOK, "[::1]:8084": http.StatusOK,
		"evil.example:8084": http.StatusMisdirectedRequest, "127.0.0.1:9999": http.StatusMisdirectedRequest,
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				hosts[net.JoinHostPort(n.IP.String(), "8084")] = http.StatusOK
			}
		}
	}
	for host, want := range hosts {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Errorf("Host %s: %d, want %d", host, rec.Code, want)
		}
	}
}

// TestCrossSiteRefused: a page of another site cannot make the browser
// open a tap or read a page (<img src="http://127.0.0.1:PORT/api/tap?...">
// has the right Host); the address bar and the dashboard's own pages can.
func TestCrossSiteRefused(t *testing.T) {
	tapper := &fakeTapper{got: make(chan model.TapRequest, 16)}
	h := newTest(t, Config{Source: demoSource(), Tapper: tapper, Local: true, AllowedHosts: AllowedHosts("127.0.0.1:8084")})
	for _, path := range []string{"/", "/tap?target=web", "/api/tap?target=web", "/static/app.js", "/nope"} {
		for _, tc := range []struct {
			site    string // "": no header (not a browser, or an old one)
			refused bool
		}{
			{"", false},
			{"none", false},
			{"same-origin", false},
			{"same-site", true},
			{"cross-site", true},
			{"CROSS-SITE", true},
		} {
			req := httptest.NewRequest(http.MethodGet, path, nil)
			req.Host = "127.0.0.1:8084"
			if tc.site != "" {
				req.Header.Set("Sec-Fetch-Site", tc.site)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if refused := rec.Code == http.StatusForbidden; refused != tc.refused {
				t.Errorf("%s with Sec-Fetch-Site %q: %d; want refused %v", path, tc.site, rec.Code, tc.refused)
			}
			if tc.refused && !strings.Contains(rec.Body.String(), "another site") {
				t.Errorf("%s: refusal %q does not say why", path, rec.Body.String())
			}
		}
	}
	// Only the three allowed requests of /api/tap reached the Tapper.
	if n := len(tapper.got); n != 3 {
		t.Errorf("the Tapper was asked %d times, want 3", n)
	}
}

func TestOverviewShowsWorkloadsEscaped(t *testing.T) {
	src := demoSource()
	src.stats["workloads"] = append(src.stats["workloads"], model.WorkloadStat{
		Resource: model.Resource{Kind: "workloads", Name: hostile}, MeshedPods: 1, Golden: model.Golden{RPS: 1}})
	h := newTest(t, Config{Source: src, Local: true, Window: 30 * time.Second})
	body := get(t, h, "/").Body.String()
	for _, want := range []string{`data-name="web" data-rps="10.00"`, "99.00%", "2.0 ms", "9.0 ms", `data-name="books" data-rps="0.00"`, "&lt;script&gt;alert(1)&lt;/script&gt;"} {
		if !strings.Contains(body, want) {
			t.Errorf("overview lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<img") {
		t.Error("overview rendered a hostile name as markup")
	}
	if src.last.Window != 30*time.Second || src.last.Resource.Kind != "workloads" {
		t.Errorf("query %+v: want the configured window and kind workloads", src.last)
	}
}

func TestEmptyAndErrorStatesLinkTheirDoc(t *testing.T) {
	idle := &fakeSource{stats: map[string][]model.WorkloadStat{"workloads": {{Resource: model.Resource{Kind: "workloads", Name: "web"}}}}}
	for _, tc := range []struct {
		name, path string
		cfg        Config
		doc        string
	}{
		{"source fails", "/", Config{Source: &fakeSource{err: errors.New("connection refused")}, Local: true}, docNoSource},
		{"nothing meshed", "/", Config{Source: &fakeSource{}, Local: true}, docNotMeshed},
		{"no traffic", "/", Config{Source: idle, Local: true}, docNoTraffic},
		{"no edges", "/edges", Config{Source: &fakeSource{}, Local: true}, docNoEdges},
		{"edges fail", "/edges", Config{Source: &fakeSource{err: errors.New("x")}, Local: true}, docNoSource},
		{"no routes", "/routes", Config{Source: &fakeSource{}, Local: true}, docNoRoutes},
		{"no identities source", "/identity", Config{Source: &fakeSource{}, Local: true}, docNoIdentity},
		{"no identities", "/identity", Config{Source: &fakeSource{}, Identities: fakeIdentities{}, Local: true}, docNoIdentity},
		{"identities fail", "/identity", Config{Source: &fakeSource{}, Identities: fakeIdentities{err: errors.New("x")}, Local: true}, docNoIdentity},
		{"no decisions source", "/policy", Config{Source: &fakeSource{}, Local: true}, docNoDecisions},
		{"no decisions", "/policy", Config{Source: &fakeSource{}, Decisions: fakeDecisions{}, Local: true}, docNoDecisions},
		{"no tapper", "/tap?target=web", Config{Source: &fakeSource{}, Local: true}, docTap},
		{"bad tap filter", "/tap?target=web&direction=sideways", Config{Source: &fakeSource{}, Tapper: &fakeTapper{}, Local: true}, docTap},
		{"bad namespace", "/?ns=Not_A_Name", Config{Source: demoSource()}, docDashboard},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := get(t, newTest(t, tc.cfg), tc.path).Body.String()
			if !strings.Contains(body, `<p class="problem" id="problem">`) {
				t.Fatalf("no problem shown:\n%s", body)
			}
			if !strings.Contains(body, `href="`+DocBase+tc.doc+`"`) {
				t.Errorf("the problem does not link %s", tc.doc)
			}
		})
	}
}

type fakeIdentities struct {
	ids []Identity
	err error
}

func (f fakeIdentities) Identities(context.Context, string) ([]Identity, error) { return f.ids, f.err }

type fakeDecisions struct {
	ds  []Decision
	err error
}

func (f fakeDecisions) Decisions(context.Context, string, time.Duration) ([]Decision, error) {
	return f.ds, f.err
}

func TestIdentityAndPolicyPages(t *testing.T) {
	exp := time.Now().Add(20*time.Hour - 3*time.Second)
	h := newTest(t, Config{Source: demoSource(), Local: true,
		Identities: fakeIdentities{ids: []Identity{{Resource: model.Resource{Kind: "workloads", Name: "web"}, Identity: "spiffe://cluster.local/ns/demo/sa/web", NotAfter: exp}}},
		Decisions: fakeDecisions{ds: []Decision{
			{Resource: model.Resource{Kind: "workloads", Name: "books"}, Decision: "allow", Server: "books", Authz: "web-to-books", ClientID: "spiffe://cluster.local/ns/demo/sa/web", TLS: true, Count: 42},
			{Resource: model.Resource{Kind: "workloads", Name: "books"}, Decision: "deny", Server: "books", Reason: "unauthorized", ClientID: hostile, TLS: true, Count: 7},
		}},
	})
	body := get(t, h, "/identity").Body.String()
	for _, want := range []string{"spiffe://cluster.local/ns/demo/sa/web", "in 19h59m5", exp.UTC().Format("2006-01-02 15:04")} {
		if !strings.Contains(body, want) {
			t.Errorf("identity page lacks %q", want)
		}
	}
	body = get(t, h, "/policy").Body.String()
	deny, allow := strings.Index(body, `class="decision deny"`), strings.Index(body, `class="decision allow"`)
	if deny < 0 || allow < 0 || deny > allow {
		t.Errorf("denials must come first: deny at %d, allow at %d", deny, allow)
	}
	if !strings.Contains(body, "web-to-books") || !strings.Contains(body, "unauthorized") || strings.Contains(body, "<script>alert") {
		t.Errorf("policy page:\n%s", body)
	}
}

func TestEdgesPageDrawsGraph(t *testing.T) {
	h := newTest(t, Config{Source: demoSource(), Local: true})
	body := get(t, h, "/edges").Body.String()
	if !strings.Contains(body, `<svg id="edges-graph"`) || strings.Count(body, `<g class="node">`) != 3 || strings.Count(body, `<g class="link`) != 2 {
		t.Errorf("edges graph: want 3 nodes and 2 links:\n%s", body)
	}
	if !strings.Contains(body, `class="link plain"`) || !strings.Contains(body, `class="link mtls"`) {
		t.Error("edges graph does not tell mTLS from plain")
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("a hostile service name rendered as markup in the SVG")
	}
}

func TestLayoutServiceBackends(t *testing.T) {
	w := func(n string) model.Resource { return model.Resource{Kind: "workloads", Name: n} }
	books := model.Resource{Kind: "services", Name: "books"}
	g := layout([]model.Edge{{Src: w("web"), Dst: books, MTLS: true}, {Src: w("books-v1"), Dst: w("authors")}, {Src: w("books-v2"), Dst: w("authors")}},
		map[model.Resource][]model.Resource{books: {w("books-v1"), w("books-v2"), w("not-in-graph")}})
	x := map[string]int{}
	for _, n := range g.Nodes {
		x[n.Label] = n.X
	}
	if len(x) != 5 || !(x["web"] < x["services/books"] && x["services/books"] < x["books-v1"] && x["books-v1"] == x["books-v2"] && x["books-v2"] < x["authors"]) {
		t.Errorf("columns %v: want web, services/books, books-v1/v2, authors", x)
	}
	serves := 0
	for _, l := range g.Links {
		if l.Serves {
			serves++
		}
	}
	if serves != 2 || len(g.Links) != 5 {
		t.Errorf("%d serve links of %d, want 2 of 5", serves, len(g.Links))
	}
}

func TestLayoutCallersLeftOfCallees(t *testing.T) {
	w := func(n string) model.Resource { return model.Resource{Kind: "workloads", Name: n} }
	for _, tc := range []struct {
		name  string
		edges []model.Edge
	}{
		{"chain", []model.Edge{{Src: w("web"), Dst: w("books")}, {Src: w("books"), Dst: w("authors")}, {Src: w("loadgen"), Dst: w("web")}}},
		{"fan out", []model.Edge{{Src: w("web"), Dst: w("books")}, {Src: w("web"), Dst: w("authors")}, {Src: w("books"), Dst: w("authors")}}},
		{"cycle", []model.Edge{{Src: w("a"), Dst: w("b")}, {Src: w("b"), Dst: w("a")}}},
		{"self", []model.Edge{{Src: w("a"), Dst: w("a")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := layout(tc.edges, nil)
			x := map[string]node{}
			for _, n := range g.Nodes {
				if n.X < 0 || n.Y < 0 || n.X+n.W > g.Width || n.Y+n.H > g.Height {
					t.Errorf("node %s at %d,%d outside %dx%d", n.Label, n.X, n.Y, g.Width, g.Height)
				}
				for _, o := range x {
					if o.X == n.X && o.Y == n.Y {
						t.Errorf("%s and %s overlap", n.Label, o.Label)
					}
				}
				x[n.Label] = n
			}
			for _, e := range tc.edges {
				s, d := x[resourceString(e.Src)], x[resourceString(e.Dst)]
				if tc.name != "cycle" && s != d && s.X >= d.X {
					t.Errorf("%s (x %d) is not left of %s (x %d)", s.Label, s.X, d.Label, d.X)
				}
			}
		})
	}
}

func TestParseTapFilter(t *testing.T) {
	for _, tc := range []struct {
		query   string
		local   bool
		want    model.Resource
		wantErr string
	}{
		{"target=web", true, model.Resource{Kind: "workloads", Name: "web"}, ""},
		{"target=", true, model.Resource{}, "choose a workload"},
		{"ns=demo&target=deploy/web", false, model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}, ""},
		{"ns=demo&target=po/web-1.x", false, model.Resource{Kind: "pods", Namespace: "demo", Name: "web-1.x"}, ""},
		{"ns=demo", false, model.Resource{Kind: "namespaces", Namespace: "demo", Name: "demo"}, ""},
		{"target=deploy/web", false, model.Resource{}, "choose a namespace"},
		{"ns=demo&target=secrets/x", false, model.Resource{}, "want KIND/NAME"},
		{"ns=demo&target=web", false, model.Resource{}, "want KIND/NAME"},
		{"ns=demo&target=deploy/Web", false, model.Resource{}, "want KIND/NAME"},
		{"target=web&method=G%20T", true, model.Resource{}, "not an HTTP method"},
		{"target=web&path=books", true, model.Resource{}, "starts with /"},
		{"target=web&direction=up", true, model.Resource{}, "direction"},
		{"target=web&path=/" + strings.Repeat("a", 2000), true, model.Resource{}, "longer than"},
	} {
		q, _ := urlQuery(tc.query)
		_, req, err := parseTapFilter(q, tc.local)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: err %v, want %q", tc.query, err, tc.wantErr)
			}
			continue
		}
		if err != nil || req.Target != tc.want {
			t.Errorf("%s: %+v, %v; want %+v", tc.query, req.Target, err, tc.want)
		}
		if req.Observe.GetMaxRps() != tapMaxRPS || req.Observe.GetBodyBytes() != 0 || req.Observe.GetHeaderNames() {
			t.Errorf("%s: observe %v: want max_rps %d, no bodies, no header names", tc.query, req.Observe, tapMaxRPS)
		}
	}
}

func urlQuery(s string) (map[string][]string, error) {
	req := httptest.NewRequest(http.MethodGet, "/?"+s, nil)
	return req.URL.Query(), nil
}

func FuzzParseTapFilter(f *testing.F) {
	f.Add("ns=demo&target=deploy/web&path=/books&method=GET", false)
	f.Add("target=web&direction=inbound", true)
	f.Add("target=%3Cscript%3E", true)
	f.Fuzz(func(t *testing.T, raw string, local bool) {
		q, err := urlParse(raw)
		if err != nil {
			return
		}
		_, req, err := parseTapFilter(q, local)
		if err != nil {
			return
		}
		m := req.Observe.GetMatch()
		if len(m.GetPathPrefix()) > maxFilterLen || (m.GetPathPrefix() != "" && m.GetPathPrefix()[0] != '/') {
			t.Fatalf("accepted path %q", m.GetPathPrefix())
		}
		if !isDNSLabel(req.Target.Name) && !isDNSSubdomain(req.Target.Name) {
			t.Fatalf("accepted target name %q", req.Target.Name)
		}
		if d := m.GetDirection(); d != "" && d != "inbound" && d != "outbound" {
			t.Fatalf("accepted direction %q", d)
		}
	})
}

func TestTapStreamIsInertAndComplete(t *testing.T) {
	now := timestamppb.New(time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC))
	tapper := &fakeTapper{got: make(chan model.TapRequest, 1), err: errors.New("refused: user may not watch deployments/tap"), events: []*apiv1.TapEvent{
		{Id: 7, Pod: "web-1", Namespace: "demo", Direction: "inbound", Tls: true, Time: now, SourceIdentity: "spiffe://x/ns/demo/sa/loadgen",
			Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: "GET", Authority: hostile, Path: "/<script>alert(3)</script>"}}},
		{Id: 7, Pod: "web-1", Namespace: "demo", Time: now,
			Event: &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: 503, SinceRequestInit: durationpb.New(3 * time.Millisecond)}}},
		{Id: 7, Pod: "web-1", Namespace: "demo", Time: now,
			Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{GrpcStatus: -1, ResponseBytes: 12, SinceRequestInit: durationpb.New(4 * time.Millisecond)}}},
		{Id: 8}, // no event: skipped
	}}
	srv := httptest.NewServer(newTest(t, Config{Source: demoSource(), Tapper: tapper}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/tap?ns=demo&target=deploy/web&path=/books&method=get&direction=inbound")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	req := <-tapper.got
	if req.Target != (model.Resource{Kind: "deployments", Namespace: "demo", Name: "web"}) || req.Observe.GetMatch().GetPathPrefix() != "/books" ||
		req.Observe.GetMatch().GetMethod() != "GET" || req.Observe.GetMatch().GetDirection() != "inbound" {
		t.Errorf("tap request %+v %v", req.Target, req.Observe)
	}
	body, _ := io.ReadAll(resp.Body)
	if strings.ContainsAny(string(body), "<>") {
		t.Errorf("the stream carries raw < or >:\n%s", body)
	}
	events := readSSE(t, string(body))
	var kinds []string
	for _, e := range events {
		kinds = append(kinds, e.name)
	}
	if got := strings.Join(kinds, ","); got != "open,tap,tap,tap,failure" {
		t.Fatalf("events %s, want open,tap,tap,tap,failure", got)
	}
	var row tapRow
	if err := json.Unmarshal([]byte(events[1].data), &row); err != nil {
		t.Fatal(err)
	}
	if row.Path != "/<script>alert(3)</script>" || row.Key != "demo/web-1/7" || row.Method != "GET" || !row.TLS || row.Time != "13:00:00.000" {
		t.Errorf("request row %+v", row)
	}
	var end tapRow
	_ = json.Unmarshal([]byte(events[3].data), &end)
	if end.Kind != "end" || end.GRPC != nil || end.Bytes != 12 || end.LatencyMs != 4 {
		t.Errorf("end row %+v", end)
	}
	if !strings.Contains(events[4].data, "may not watch") || !strings.Contains(events[4].data, DocBase+docTap) {
		t.Errorf("failure %s: want the tapper's error and the doc", events[4].data)
	}
}

type sseEvent struct{ name, data string }

func readSSE(t *testing.T, body string) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		case line == "" && cur.name != "":
			out = append(out, cur)
			cur = sseEvent{}
		}
	}
	return out
}

func TestTapStreamRefusals(t *testing.T) {
	open := &fakeTapper{block: true, got: make(chan model.TapRequest, 4)}
	srv := httptest.NewServer(newTest(t, Config{Source: demoSource(), Tapper: open, Local: true, MaxTaps: 1}))
	defer srv.Close()
	if r, _ := http.Get(srv.URL + "/api/tap?target=Bad_Name"); r.StatusCode != http.StatusBadRequest {
		t.Errorf("bad target: %d", r.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/tap?target=web", nil)
	first, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	<-open.got
	second, err := http.Get(srv.URL + "/api/tap?target=web")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second tap past MaxTaps 1: %d, want 429", second.StatusCode)
	}
	noTap := httptest.NewServer(newTest(t, Config{Source: demoSource(), Local: true}))
	defer noTap.Close()
	if r, _ := http.Get(noTap.URL + "/api/tap?target=web"); r.StatusCode != http.StatusNotImplemented {
		t.Errorf("no tapper: %d", r.StatusCode)
	}
}

func TestExpiresString(t *testing.T) {
	if got := expiresString(time.Time{}); got != "unknown" {
		t.Errorf("zero: %s", got)
	}
	if got := expiresString(time.Now().Add(-time.Hour)); !strings.HasPrefix(got, "expired ") {
		t.Errorf("past: %s", got)
	}
}

func urlParse(raw string) (map[string][]string, error) { return url.ParseQuery(raw) }

// TestDocLinksResolve: every doc an empty or error state links to is a
// heading of the docs (GitHub's anchor: lower case, spaces to dashes,
// punctuation dropped).
func TestDocLinksResolve(t *testing.T) {
	anchors := map[string]map[string]bool{}
	for _, link := range []string{docDashboard, docNoTraffic, docNoSource, docNoEdges, docNoRoutes, docTap, docNoIdentity, docNoDecisions, docNotMeshed} {
		file, anchor, _ := strings.Cut(link, "#")
		if anchors[file] == nil {
			b, err := os.ReadFile("../../docs/" + file)
			if err != nil {
				t.Fatal(err)
			}
			anchors[file] = map[string]bool{}
			for l := range strings.SplitSeq(string(b), "\n") {
				if h, ok := strings.CutPrefix(strings.TrimLeft(l, "#"), " "); ok && strings.HasPrefix(l, "#") {
					anchors[file][githubAnchor(h)] = true
				}
			}
		}
		if !anchors[file][anchor] {
			t.Errorf("%s: no heading with anchor %q", file, anchor)
		}
	}
}

func githubAnchor(h string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case c == ' ':
			b.WriteByte('-')
		case c == '-' || c == '_' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'):
			b.WriteRune(c)
		}
	}
	return b.String()
}

// The routes page shows each row's side: what a workload served
// (inbound) and the outbound routes it matched, per service, route, rule
// and backend, names escaped.
func TestRoutesPageShowsBothSides(t *testing.T) {
	h := newTest(t, Config{Source: demoSource(), Local: true})
	body := get(t, h, "/routes").Body.String()
	if n := strings.Count(body, `<tr class="route inbound">`); n != 1 {
		t.Errorf("%d inbound rows, want 1:\n%s", n, body)
	}
	if n := strings.Count(body, `<tr class="route outbound">`); n != 2 {
		t.Errorf("%d outbound rows, want 2:\n%s", n, body)
	}
	for _, want := range []string{
		`<td class="direction">inbound (served)</td>`,
		`<td class="direction">outbound (sent)</td><td>books.demo:80</td><td class="route-name">demo/books-split</td><td class="rule">0</td><td class="backend">books-v1.demo:80</td><td>100.00%</td>`,
		`<td class="backend">&lt;script&gt;`,
		`<td class="rule">-</td><td class="backend">-</td>`, // the inbound row
	} {
		if !strings.Contains(body, want) {
			t.Errorf("routes page lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Error("a hostile backend rendered as markup")
	}
}

// Only inbound rows say which workloads serve a service: a client's
// outbound routes to it do not make the client a backend in the graph.
func TestBackendsFromInboundRowsOnly(t *testing.T) {
	w := func(n string) model.Resource { return model.Resource{Kind: "workloads", Name: n} }
	src := &fakeSource{routes: []model.RouteStat{
		{Resource: w("books-v1"), Direction: model.DirectionInbound, Route: "[default]", Authority: "books.demo:80"},
		{Resource: w("web"), Direction: model.DirectionOutbound, Route: "demo/books-split", Rule: "0", Authority: "books.demo:80", Backend: "books-v1.demo:80"},
	}}
	h := newTest(t, Config{Source: src, Local: true})
	books := model.Resource{Kind: "services", Name: "books"}
	got := h.backends(context.Background(), "", []model.Edge{{Src: w("web"), Dst: books}})
	if len(got) != 1 || len(got[books]) != 1 || got[books][0] != w("books-v1") {
		t.Errorf("backends %v, want books -> books-v1 only", got)
	}
}
