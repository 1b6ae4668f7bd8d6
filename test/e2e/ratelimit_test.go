package e2e

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/test/harness"
)

// serviceLimit is a RateLimit on the Service echo: each client proxy may
// send it rps requests a second, in bursts of burst.
func serviceLimit(rps, burst int) meshconfig.Object {
	return meshconfig.Object{
		APIVersion: "policy.trellis.io/v1alpha1", Kind: "RateLimit",
		Metadata: meshconfig.ObjectMeta{Name: "echo-quota", Namespace: ns},
		Spec: []byte(`{"targetRef": {"kind": "Service", "name": "echo"}, "requestsPerSecond": ` +
			strconv.Itoa(rps) + `, "burst": ` + strconv.Itoa(burst) + `}`),
	}
}

// TestOutboundRateLimitLocal, end to end with the real binaries in local
// mode: a RateLimit on the Service echo in the store file reaches the
// client proxy with echo's routes; the client, sending at 3x the rate,
// gets about the rate served (counted by the app behind the server
// proxy) and the rest answered 429 with Retry-After by its own proxy
// (proxy=outbound), counted in the client proxy's
// trellis_ratelimit_refused_total{direction="outbound"}. Removing the
// RateLimit from the file lifts the limit on the running proxy.
func TestOutboundRateLimitLocal(t *testing.T) {
	b := newBasicMesh(t)
	const rps, burst, rate, seconds = 30, 30, 3 * 30, 3
	st := b.mesh.Store()
	st.Policies = append(st.Policies, serviceLimit(rps, burst))
	b.mesh.WriteStore(st)
	c := meshClient(b.client.OutboundAddr, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The store is reloaded within a second: wait for the first refusal
	// (a burst's worth of requests at most), then let the bucket fill.
	if err := eventually(30*time.Second, func() error {
		for range 2 * burst {
			resp, _, err := get(ctx, c, "/")
			if err != nil {
				return err
			}
			if resp.StatusCode == http.StatusTooManyRequests {
				return nil
			}
		}
		return errStatus(http.StatusOK)
	}); err != nil {
		t.Fatalf("the limit never applied: %v", err)
	}
	time.Sleep(time.Duration(burst) * time.Second / rps)
	before := b.app.served.Load()
	m0 := refusedOutbound(ctx, t, b.client)

	ok, limited, bad, elapsed := blast(ctx, c, rate, seconds)
	served := b.app.served.Load() - before
	refused := refusedOutbound(ctx, t, b.client) - m0
	t.Logf("sent %d in %v: %d served (%.1f/s), the app saw %d, %d answered 429 by the client proxy, %.0f counted",
		rate*seconds, elapsed.Round(time.Millisecond), ok, float64(ok)/elapsed.Seconds(), served, limited, refused)
	if len(bad) > 0 {
		t.Fatalf("%d answers neither 200 nor the client proxy's 429 with Retry-After, e.g. %s", len(bad), bad[0])
	}
	ceiling := burst + int(rps*elapsed.Seconds()) + 1
	floor := int(0.8 * rps * elapsed.Seconds())
	if ok > ceiling || ok < floor {
		t.Errorf("%d served, want between %d and %d", ok, floor, ceiling)
	}
	if served != int64(ok) {
		t.Errorf("the app saw %d requests, the client got %d 200s", served, ok)
	}
	if int(refused) != limited || limited != rate*seconds-ok {
		t.Errorf("%d 429s, %.0f counted, %d sent and not served", limited, refused, rate*seconds-ok)
	}

	st = b.mesh.Store()
	st.Policies = nil
	b.mesh.WriteStore(st)
	if err := eventually(30*time.Second, func() error {
		if ok, _, _, _ := blast(ctx, c, 4*rps, 1); ok < 4*rps {
			return errStatus(http.StatusTooManyRequests)
		}
		return nil
	}); err != nil {
		t.Fatalf("the limit was not lifted: %v", err)
	}
}

type errStatus int

func (e errStatus) Error() string { return "status " + strconv.Itoa(int(e)) }

// blast GETs echo through c at rate requests a second for seconds, and
// sorts the answers: 200s, the client proxy's own 429s (Retry-After,
// proxy=outbound, rate_limited), anything else.
func blast(ctx context.Context, c *http.Client, rate, seconds int) (ok, limited int, bad []string, elapsed time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	for range rate * seconds {
		<-tick.C
		wg.Go(func() {
			resp, body, err := get(ctx, c, "/")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				bad = append(bad, err.Error())
			case resp.StatusCode == http.StatusOK:
				ok++
			case resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" &&
				strings.Contains(resp.Header.Get("Trellis-Proxy-Error"), "rate_limited") &&
				strings.Contains(resp.Header.Get("Trellis-Proxy-Error"), "proxy=outbound") &&
				strings.Contains(resp.Header.Get("Trellis-Proxy-Error"), identityOf("client")):
				limited++
			default:
				bad = append(bad, resp.Status+" "+resp.Header.Get("Trellis-Proxy-Error")+" "+string(body))
			}
		})
	}
	wg.Wait()
	return ok, limited, bad, time.Since(start)
}

func refusedOutbound(ctx context.Context, t *testing.T, px *harness.Proxy) float64 {
	t.Helper()
	m, err := px.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m.Value("trellis_ratelimit_refused_total", map[string]string{
		"direction": "outbound", "server": ns + "/echo-quota", "reason": "rate"})
}
