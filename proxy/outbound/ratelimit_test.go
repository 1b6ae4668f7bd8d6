package outbound_test

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// TestOutboundRateLimit: a client sending to books at 3x the rate of the
// Service's outbound limit gets about the limit served (counted by the
// app behind the server proxy) and the rest answered 429 with
// Retry-After by its own proxy, counted with direction=outbound; the
// canary the route sends part of the traffic to shares the Service's
// bucket (one token per request the app sends to books).
func TestOutboundRateLimit(t *testing.T) {
	m := newMesh(t)
	const rps, burst, rate, seconds = 40, 40, 3 * 40, 3
	m.src.set("books.demo:80", &apiv1.Route{Name: "demo/books-canary",
		Backends: []*apiv1.WeightedBackend{backend("books.demo:80", 80), backend("books-v2.demo:80", 20)}})
	m.src.setLimit("books.demo:80", &apiv1.OutboundLimit{Name: "demo/books-limit", RequestsPerSecond: rps, Burst: burst})

	var (
		mu               sync.Mutex
		ok, limited, bad int
		badExample       string
		wg               sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	start := time.Now()
	for range rate * seconds {
		<-tick.C
		wg.Go(func() {
			resp, body := m.do(t, http.MethodGet, "/", "")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case resp.StatusCode == http.StatusOK:
				ok++
			case resp.StatusCode == http.StatusTooManyRequests && retryAfterOK(resp.Header.Get("Retry-After")) &&
				strings.Contains(resp.Header.Get("Trellis-Proxy-Error"), "rate_limited") &&
				strings.Contains(resp.Header.Get("Trellis-Proxy-Error"), "proxy=outbound") &&
				strings.Contains(body, "demo/books-limit"):
				limited++
			default:
				bad++
				badExample = resp.Status + " " + strings.Join(resp.Header["Trellis-Proxy-Error"], ",") + " " + body
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	served := m.apps["books.demo:80"].hits.Load() + m.apps["books-v2.demo:80"].hits.Load()
	refused := counter(t, m.reg, "trellis_ratelimit_refused_total", map[string]string{
		"direction": metrics.Outbound, "server": "demo/books-limit", "reason": metrics.LimitRate})
	t.Logf("sent %d in %v: %d served (%.1f/s; the apps saw %d), %d answered 429, %.0f counted refused",
		rate*seconds, elapsed.Round(time.Millisecond), ok, float64(ok)/elapsed.Seconds(), served, limited, refused)
	if bad > 0 {
		t.Fatalf("%d answers neither 200 nor the proxy's 429 with Retry-After, e.g. %s", bad, badExample)
	}
	// At most the burst and the rate over the time taken; at least most
	// of the rate (the client keeps the bucket empty at 3x).
	ceiling := burst + int(rps*elapsed.Seconds()) + 1
	floor := int(0.8 * rps * elapsed.Seconds())
	if ok > ceiling || ok < floor {
		t.Errorf("%d served, want between %d and %d", ok, floor, ceiling)
	}
	if served != int64(ok) {
		t.Errorf("the apps saw %d requests, the client got %d 200s: a refused request reached them", served, ok)
	}
	if int(refused) != limited || limited != rate*seconds-ok {
		t.Errorf("%d 429s, %.0f counted, %d sent and not served", limited, refused, rate*seconds-ok)
	}
}

// retryAfterOK: Retry-After is whole seconds, at least 1 (a token is at
// most a second away at these rates).
func retryAfterOK(v string) bool {
	n, err := strconv.Atoi(v)
	return err == nil && n >= 1 && n <= 2
}

// TestOutboundRateLimitOff: no limit in the answer, nothing refused; the
// limit's removal lifts it at once.
func TestOutboundRateLimitOff(t *testing.T) {
	m := newMesh(t)
	m.src.setLimit("books.demo:80", &apiv1.OutboundLimit{Name: "demo/books-limit", RequestsPerSecond: 1, Burst: 1})
	codes := func() []int {
		var out []int
		for range 5 {
			resp, body := m.do(t, http.MethodGet, "/", "")
			out = append(out, resp.StatusCode)
			if resp.StatusCode == http.StatusTooManyRequests && len(out) == 5 {
				t.Logf("%s\nretry-after: %s\ntrellis-error: %s\ntrellis-proxy-error: %s\n\n%s", resp.Status,
					resp.Header.Get("Retry-After"), resp.Header.Get("Trellis-Error"), resp.Header.Get("Trellis-Proxy-Error"), body)
			}
		}
		return out
	}
	if got := codes(); got[0] != http.StatusOK || got[4] != http.StatusTooManyRequests {
		t.Fatalf("with 1 req/s: %v, want a 200 then 429s", got)
	}
	m.src.setLimit("books.demo:80", nil)
	for i, c := range codes() {
		if c != http.StatusOK {
			t.Fatalf("request %d without a limit: %d", i, c)
		}
	}
}
