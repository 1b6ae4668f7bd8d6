package browser

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// DashboardExpect is what a dashboard over a running demo must show.
type DashboardExpect struct {
	// Query is appended to every page ("?ns=trellis-demo" on Kubernetes).
	Query string
	// Workloads must each have a row; Serving must each show RPS > 0.
	Workloads, Serving []string
	// Edges is how many mTLS edges the graph must draw at least.
	Edges int
	// TapQuery selects the tap ("target=web", "ns=demo&target=deploy/web").
	TapQuery string
	// ShotPrefix names the screenshots (dashboard-local-overview.png...).
	ShotPrefix string
	// Ceiling bounds each wait (figures need a scrape or two).
	Ceiling time.Duration
}

// CheckDashboard drives the dashboard at base (http://host:port) like a
// user: the workloads with live figures, the edges graph, a live tap, the
// identities and the policy page; screenshots of each; and no console
// error or CSP violation anywhere.
func CheckDashboard(t *testing.T, b *Browser, base string, want DashboardExpect) {
	t.Helper()
	if want.Ceiling == 0 {
		want.Ceiling = 2 * time.Minute
	}
	q := want.Query
	wait := func(what, page, cond string) {
		t.Helper()
		start := time.Now()
		err := b.Do(want.Ceiling, chromedp.Navigate(base+page+q), chromedp.WaitVisible("main h1"),
			chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(want.Ceiling)))
		if err != nil {
			text, _ := Eval[string](b, `document.getElementById("main") ? document.getElementById("main").innerText : document.body.innerText`)
			t.Fatalf("%s: not within %s: %v\npage %s shows:\n%s", what, want.Ceiling, err, page, text)
		}
		t.Logf("%s: after %s", what, time.Since(start).Round(time.Millisecond))
	}

	// Every workload with a row; every serving one with RPS > 0 (the page
	// refreshes itself in place, so the condition is polled on live data).
	var conds []string
	for _, w := range want.Workloads {
		conds = append(conds, fmt.Sprintf(`document.querySelector('tr.workload[data-name=%q]') !== null`, w))
	}
	for _, w := range want.Serving {
		conds = append(conds, fmt.Sprintf(`parseFloat((document.querySelector('tr.workload[data-name=%q]') || {dataset: {}}).dataset.rps || "0") > 0`, w))
	}
	wait("every workload shown, the serving ones with RPS > 0", "/", strings.Join(conds, " && "))
	b.Screenshot(want.ShotPrefix + "overview.png")

	wait(fmt.Sprintf("the edges graph with at least %d mTLS edges", want.Edges), "/edges",
		fmt.Sprintf(`document.querySelectorAll('#edges-graph g.link.mtls').length >= %d`, want.Edges))
	b.Screenshot(want.ShotPrefix + "edges.png")

	tapURL := "/tap?" + want.TapQuery
	start := time.Now()
	err := b.Do(want.Ceiling, chromedp.Navigate(base+tapURL), chromedp.WaitVisible("main h1"),
		chromedp.Poll[chromedp.Void](`document.getElementById("problem") !== null || !document.getElementById("tap-problem").classList.contains("hidden") || Array.from(document.querySelectorAll('#tap-rows tr td.latency')).filter(td => td.textContent !== "").length >= 3`,
			chromedp.WithPollingInterval(250*time.Millisecond), chromedp.WithPollingTimeout(want.Ceiling)))
	problem, _ := Eval[string](b, `(function () {
		var p = document.getElementById("problem"), tp = document.getElementById("tap-problem");
		if (p) { return p.textContent; }
		if (tp && !tp.classList.contains("hidden")) { return tp.textContent; }
		return "";
	})()`)
	if err != nil || problem != "" {
		t.Fatalf("tap %s: no live events within %s (%v): %s", tapURL, want.Ceiling, err, problem)
	}
	t.Logf("tap: 3 complete requests after %s", time.Since(start).Round(time.Millisecond))
	if state, _ := Eval[string](b, `document.getElementById("tap-state").textContent`); state != "live" {
		t.Errorf("tap state %q, want live", state)
	}
	b.Screenshot(want.ShotPrefix + "tap.png")

	wait("identities with a certificate expiry", "/identity",
		`document.querySelectorAll('tr.identity-row').length > 0 && Array.from(document.querySelectorAll('tr.identity-row')).every(tr => tr.innerText.indexOf('unknown') < 0)`)
	b.Screenshot(want.ShotPrefix + "identity.png")

	// Routes and policy: a table, or an explanation that links its doc.
	for _, page := range []string{"/routes", "/policy"} {
		wait(page+" shown", page, `document.querySelector('main table') !== null || document.querySelector('#problem a[href*="observability.md#dashboard"]') !== null`)
	}
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the browser reported problems:\n%s", strings.Join(p, "\n"))
	}
}
