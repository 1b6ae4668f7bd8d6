package outbound_test

import (
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/balance"
)

// countingApp answers 200, or 500 while sick, and counts what it serves.
type countingApp struct {
	sick   atomic.Bool
	served atomic.Int64
}

func (a *countingApp) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	a.served.Add(1)
	if a.sick.Load() {
		http.Error(w, "sick", http.StatusInternalServerError)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

// send makes n requests through the outbound proxy, 4 at a time, and
// returns how many were not 200.
func send(t *testing.T, p *pair, n int) int {
	t.Helper()
	var failed atomic.Int64
	var wg sync.WaitGroup
	work := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for range work {
				resp, err := p.client.Get(url("/"))
				if err != nil {
					t.Error(err)
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	for range n {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	return int(failed.Load())
}

// within waits for cond under a generous ceiling.
func within(t *testing.T, ceiling time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ceiling)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// One of three endpoints turns to answering 500s: the real outbound proxy's
// balancer ejects it, the client's success rate goes back above 99.9 %,
// and once it recovers a probe brings it back.
func TestCircuitBreakingEjectsAndProbesBack(t *testing.T) {
	healthy, sick := &countingApp{}, &countingApp{}
	sickLn, healthyLn := listen(t), listen(t)
	for _, s := range []struct {
		ln  net.Listener
		app *countingApp
	}{{sickLn, sick}, {healthyLn, healthy}} {
		srv := &http.Server{Handler: s.app}
		go func() { _ = srv.Serve(s.ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	meshed := &countingApp{}
	p := newPair(t, pairOpts{app: meshed, extraEndpoints: []balance.Endpoint{
		{Addr: sickLn.Addr().String(), Weight: 1},
		{Addr: healthyLn.Addr().String(), Weight: 1},
	}})
	sickAddr := sickLn.Addr().String()
	ejected := func() bool { return slices.Contains(p.bal.Status().Ejected, sickAddr) }

	if failed := send(t, p, 300); failed != 0 || sick.served.Load() == 0 {
		t.Fatalf("healthy phase: %d failed, the sick-to-be endpoint served %d", failed, sick.served.Load())
	}

	sick.sick.Store(true)
	eventually(t, "the failing endpoint is ejected", func() bool {
		send(t, p, 20)
		return ejected()
	})
	const n = 3000
	failed := send(t, p, n)
	t.Logf("with the failing endpoint ejected: %d of %d requests failed", failed, n)
	if failed*1000 > n {
		t.Fatalf("with the failing endpoint ejected: %d of %d requests failed, want at most 0.1 %%", failed, n)
	}

	sick.sick.Store(false)
	before := sick.served.Load()
	// The backoff has doubled with each failed probe: up to 16 s.
	within(t, time.Minute, "the recovered endpoint is probed back", func() bool {
		send(t, p, 20)
		return !ejected()
	})
	send(t, p, 300)
	if sick.served.Load() <= before+1 {
		t.Fatalf("the recovered endpoint served %d requests after its probe", sick.served.Load()-before)
	}
	if st := p.bal.Status(); st.Ejections == 0 {
		t.Fatalf("status %+v: no ejection counted", st)
	}
}
