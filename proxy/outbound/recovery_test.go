package outbound_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
)

// delayApp answers after its delay and counts what it serves.
type delayApp struct {
	delay  atomic.Int64 // nanoseconds
	served atomic.Int64
}

func (a *delayApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.served.Add(1)
	time.Sleep(time.Duration(a.delay.Load()))
	_, _ = io.WriteString(w, "ok")
}

// Real round trips through the outbound proxy at a modest, paced rate (the
// case where P2C alone never picks an endpoint it once saw slow): one of
// the backends answers 200 ms late for a few seconds, then as fast as the
// others. It gets a trickle while slow, and near its fair share again once
// it is fast: the time that took and the shares are printed.
func TestSlowBackendGetsItsShareBack(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprintf("one of %d", n), func(t *testing.T) {
			apps := make([]*delayApp, n)
			var eps []balance.Endpoint
			for i := range apps {
				apps[i] = &delayApp{}
				ln := listen(t)
				srv := &http.Server{Handler: apps[i]}
				go func() { _ = srv.Serve(ln) }()
				t.Cleanup(func() { _ = srv.Close() })
				eps = append(eps, balance.Endpoint{Addr: ln.Addr().String(), Weight: 1})
			}
			slow := apps[n-1]
			p := newPair(t, pairOpts{app: http.NotFoundHandler()})
			p.bal.Update(eps) // the pair's own endpoint is left out
			stop := paced(t, p, 2, 5*time.Millisecond)
			defer stop()

			// shares samples the fraction of the requests slow served over d.
			shares := func(d time.Duration) (float64, int64) {
				var before []int64
				for _, a := range apps {
					before = append(before, a.served.Load())
				}
				time.Sleep(d)
				var total int64
				for i, a := range apps {
					total += a.served.Load() - before[i]
				}
				return float64(slow.served.Load()-before[n-1]) / float64(max(total, 1)), total
			}
			fair := 1 / float64(n)
			time.Sleep(time.Second)
			slow.delay.Store(int64(200 * time.Millisecond))
			time.Sleep(time.Second) // its estimate takes the peak
			during, total := shares(3 * time.Second)
			t.Logf("while slow: %.1f %% of %d requests (fair %.0f %%)", 100*during, total, 100*fair)
			if during > fair/2 {
				t.Fatalf("while 200 ms slow it got %.1f %% of the requests, fair is %.0f %%", 100*during, 100*fair)
			}

			slow.delay.Store(0)
			start := time.Now()
			var log []string
			within(t, 20*time.Second, "the recovered backend's share back near fair", func() bool {
				s, _ := shares(500 * time.Millisecond)
				log = append(log, fmt.Sprintf("%.0f%%", 100*s))
				return s >= 0.7*fair
			})
			took := time.Since(start)
			after, total := shares(3 * time.Second)
			t.Logf("fast again: near fair (>= 70 %%) after %s (shares per 500 ms: %s); then %.1f %% of %d requests",
				took.Round(100*time.Millisecond), strings.Join(log, " "), 100*after, total)
		})
	}
}

// paced sends requests through the outbound proxy from workers goroutines,
// each pausing gap between requests, until the returned func is called.
func paced(t *testing.T, p *pair, workers int, gap time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				case <-time.After(gap):
				}
				resp, err := p.client.Get(url("/"))
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	return func() { close(done); wg.Wait() }
}
