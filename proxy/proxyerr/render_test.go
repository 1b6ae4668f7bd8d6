package proxyerr

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

const serverID = "spiffe://cluster.local/ns/e2e/sa/echo"

func newRenderer(t *testing.T, dir string) (*Renderer, *bytes.Buffer, *metrics.HTTP) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &Renderer{Direction: dir, Identity: serverID, Log: ratelog.New(log, time.Minute)}, &buf, m.HTTP(metrics.Key{Direction: dir})
}

func TestRenderAndCarryBack(t *testing.T) {
	server, serverLog, hm := newRenderer(t, metrics.Inbound)
	rec := httptest.NewRecorder()
	e := Classify(context.Background(), &netDialErr, ToApp, "127.0.0.1:18080")
	server.Answer(context.Background(), rec, hm, e, time.Now())
	resp := rec.Result()
	if resp.StatusCode != 502 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	want := "app_unreachable; culprit=app; proxy=inbound; identity=" + serverID
	if got := resp.Header.Get(HeaderProxyError); got != want {
		t.Errorf("%s: %q, want %q", HeaderProxyError, got, want)
	}
	if got := resp.Header.Get(HeaderError); !strings.HasPrefix(got, "connecting to app 127.0.0.1:18080") || rec.Body.String() != got+"\n" {
		t.Errorf("%s %q, body %q", HeaderError, got, rec.Body.String())
	}
	if n := strings.Count(serverLog.String(), "level=INFO"); n != 1 || !strings.Contains(serverLog.String(), "reason=app_unreachable") {
		t.Errorf("want one info line naming the reason:\n%s", serverLog)
	}

	// The client proxy gives up after that answer: the app behind it sees
	// the server proxy's reason, and that proxy named.
	client, clientLog, chm := newRenderer(t, metrics.Outbound)
	client.Identity = "spiffe://cluster.local/ns/e2e/sa/client"
	gave := GaveUp("echo.e2e:80", FromUnprocessed(resp))
	rec = httptest.NewRecorder()
	client.Answer(context.Background(), rec, chm, gave, time.Now())
	if got := rec.Result().Header.Get(HeaderProxyError); got != want {
		t.Errorf("carried back: %q, want %q", got, want)
	}
	if got := rec.Result().Header.Get(HeaderError); !strings.HasPrefix(got, "no reachable endpoint for echo.e2e:80: connecting to app") {
		t.Errorf("carried back message %q", got)
	}
	if !strings.Contains(clientLog.String(), "by=\"proxy=inbound; identity="+serverID) {
		t.Errorf("client log does not name the server proxy:\n%s", clientLog)
	}
}

func TestRenderOneLinePerCausePerInterval(t *testing.T) {
	r, log, hm := newRenderer(t, metrics.Outbound)
	for range 100 {
		r.Answer(context.Background(), httptest.NewRecorder(), hm, New(http.StatusServiceUnavailable, ReasonNoEndpoints, "no endpoints for x"), time.Now())
		r.Answer(context.Background(), httptest.NewRecorder(), hm, New(http.StatusBadRequest, ReasonBadRequest, "bad"), time.Now())
	}
	if n := strings.Count(log.String(), "\n"); n != 2 {
		t.Errorf("%d lines for 200 errors of 2 causes, want 2:\n%s", n, log)
	}
}

func TestRenderKeepsHeaderSafe(t *testing.T) {
	r, _, hm := newRenderer(t, metrics.Inbound)
	rec := httptest.NewRecorder()
	r.Answer(context.Background(), rec, hm, New(502, ReasonAppError, "app said \r\nX-Injected: 1"+strings.Repeat("é", 600)), time.Now())
	got := rec.Result().Header.Get(HeaderError)
	if strings.ContainsAny(got, "\r\n") || len(got) > maxMsg {
		t.Errorf("unsafe header value (%d bytes): %q", len(got), got)
	}
}

func TestFromResponseIgnoresAppAnswers(t *testing.T) {
	if e := FromResponse(&http.Response{StatusCode: 502, Header: http.Header{HeaderError: {"x"}}}); e != nil {
		t.Errorf("an answer without %s is the app's, got %+v", HeaderProxyError, e)
	}
	e := FromUnprocessed(&http.Response{StatusCode: 502, Header: http.Header{HeaderError: {"connecting to app"}}})
	if e.Reason != ReasonAppUnreachable || e.Culprit != App {
		t.Errorf("an older peer's unprocessed answer: %+v", e)
	}
}

func FuzzFromResponse(f *testing.F) {
	f.Add("app_unreachable; culprit=app; proxy=inbound; identity=" + serverID)
	f.Add("connect_error")
	f.Add(";;;=;culprit=;proxy")
	f.Add("x; culprit=client; culprit=mesh; identity=a; proxy=b; proxy=c")
	f.Add("made_up_reason_1; culprit=evil")
	f.Fuzz(func(t *testing.T, v string) {
		e := FromResponse(&http.Response{StatusCode: 502, Header: http.Header{HeaderProxyError: {v}}})
		if strings.TrimSpace(v) == "" {
			return
		}
		if e == nil {
			t.Fatalf("%q: nil", v)
		}
		if !knownReasons[e.Reason] || (e.Culprit != Client && e.Culprit != Mesh && e.Culprit != App) {
			t.Fatalf("%q: reason %q culprit %q outside the fixed vocabulary", v, e.Reason, e.Culprit)
		}
		// Whatever a peer sent, carrying it back gives one safe header line.
		rec := httptest.NewRecorder()
		(&Renderer{Direction: "outbound", Log: ratelog.New(nil, 0)}).Write(rec, GaveUp("x", e))
		for _, h := range []string{HeaderProxyError, HeaderError} {
			if got := rec.Result().Header.Get(h); strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(got) > 2*maxMsg {
				t.Fatalf("%q rendered as %s: %q", v, h, got)
			}
		}
	})
}

var netDialErr = dialErr()
