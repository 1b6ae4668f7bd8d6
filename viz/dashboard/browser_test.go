package dashboard

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/test/browser"
	"github.com/trellis-mesh/trellis/viz/model"
)

// streamTapper sends one hostile request (request, response, end) every
// 50ms until the tap ends: what a browser must render as inert text.
type streamTapper struct{}

func (streamTapper) Tap(ctx context.Context, _ model.TapRequest, fn func(*apiv1.TapEvent) error) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for id := uint64(1); ; id++ {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		now := timestamppb.Now()
		for _, e := range []*apiv1.TapEvent{
			{Id: id, Direction: "inbound", Time: now, Tls: true, SourceIdentity: `spiffe://x/"><img src=x onerror="window.__pwned=1">`,
				Event: &apiv1.TapEvent_RequestInit_{RequestInit: &apiv1.TapEvent_RequestInit{Method: "GET", Authority: hostile,
					Path: `/<script>window.__pwned=1</script>`}}},
			{Id: id, Time: now, Event: &apiv1.TapEvent_ResponseInit_{ResponseInit: &apiv1.TapEvent_ResponseInit{HttpStatus: 200}}},
			{Id: id, Time: now, Event: &apiv1.TapEvent_ResponseEnd_{ResponseEnd: &apiv1.TapEvent_ResponseEnd{GrpcStatus: -1,
				SinceRequestInit: durationpb.New(2 * time.Millisecond)}}},
		} {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// TestBrowserRendersHostileDataInert loads every page in a real headless
// Chromium with hostile names in the figures and the tap stream: nothing
// runs, the text shows as text, and the console stays clean (no CSP
// violation, no error).
func TestBrowserRendersHostileDataInert(t *testing.T) {
	b := browser.Start(t)
	src := demoSource()
	src.stats["workloads"] = append(src.stats["workloads"], model.WorkloadStat{
		Resource: model.Resource{Kind: "workloads", Name: `"><script>window.__pwned=1</script>`}, MeshedPods: 1, Golden: model.Golden{RPS: 1}})
	h := newTest(t, Config{Source: src, Tapper: streamTapper{}, Local: true, Refresh: time.Second,
		Identities: fakeIdentities{ids: []Identity{{Resource: model.Resource{Kind: "workloads", Name: "web"}, Identity: hostile, NotAfter: time.Now().Add(time.Hour)}}},
		Decisions:  fakeDecisions{ds: []Decision{{Resource: model.Resource{Kind: "workloads", Name: "web"}, Decision: "deny", Server: hostile, ClientID: hostile}}}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.AllowedHosts = AllowedHosts(ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()

	for _, path := range []string{"/", "/edges", "/routes", "/identity", "/policy"} {
		if err := b.Do(30*time.Second, chromedp.Navigate(base+path), chromedp.WaitVisible("main h1")); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		// Wait for one in-place refresh (data-refresh 1s) to have run.
		if err := b.Do(30*time.Second, chromedp.Sleep(1500*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		checkInert(t, b, path)
		if path == "/routes" {
			checkRouteSides(t, b)
		}
	}
	if err := b.Do(30*time.Second, chromedp.Navigate(base+"/tap?target=web"),
		chromedp.Poll[chromedp.Void](`document.querySelectorAll("#tap-rows tr td.latency").length >= 5 && document.querySelector("#tap-rows tr td.latency").textContent !== ""`)); err != nil {
		t.Fatalf("tap: no events rendered: %v", err)
	}
	path, err := browser.Eval[string](b, `document.querySelector("#tap-rows tr td.path").textContent`)
	if err != nil || path != `/<script>window.__pwned=1</script>` {
		t.Errorf("tap path cell %q (%v): want the hostile path as text", path, err)
	}
	state, _ := browser.Eval[string](b, `document.getElementById("tap-state").textContent`)
	if state != "live" {
		t.Errorf("tap state %q, want live", state)
	}
	checkInert(t, b, "/tap")
	if p := b.Problems(); len(p) > 0 {
		t.Errorf("the browser reported problems:\n%s", strings.Join(p, "\n"))
	}
}

func checkInert(t *testing.T, b *browser.Browser, page string) {
	t.Helper()
	pwned, err := browser.Eval[bool](b, `window.__pwned === 1`)
	if err != nil || pwned {
		t.Errorf("%s: hostile text ran as script (pwned %v, %v)", page, pwned, err)
	}
	n, err := browser.Eval[int](b, `document.scripts.length + document.images.length`)
	if err != nil || n != 1 {
		t.Errorf("%s: %d scripts and images in the page (%v), want the one app.js", page, n, err)
	}
}

// checkRouteSides reads the routes table as the browser shows it, after
// an in-place refresh: the inbound row and web's two outbound route rows,
// each saying its side, the hostile backend as text.
func checkRouteSides(t *testing.T, b *browser.Browser) {
	t.Helper()
	rows, err := browser.Eval[[]string](b, `Array.from(document.querySelectorAll("#routes tbody tr")).map(
		tr => Array.from(tr.cells).slice(0, 6).map(td => td.innerText).join(" | "))`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"web | inbound (served) |  | " + hostile + " | - | -",
		"web | outbound (sent) | books.demo:80 | demo/books-split | 0 | " + hostile,
		"web | outbound (sent) | books.demo:80 | demo/books-split | 0 | books-v1.demo:80",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("routes table in the browser:\n%s\nwant\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}
