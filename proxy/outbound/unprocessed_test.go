package outbound_test

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/trellis-mesh/trellis/proxy/balance"
)

// TestRetryUnprocessed: an endpoint whose proxy runs but whose app is gone
// (a terminating pod) answers that it did not process the request; the
// outbound sends replayable requests to another endpoint and passes the
// answer through for the others. An app cannot fake that answer.
func TestRetryUnprocessed(t *testing.T) {
	var served atomic.Int64
	// A port of the pod's app that is closed: an app that has exited.
	dead := listen(t)
	_, deadPort, _ := net.SplitHostPort(dead.Addr().String())
	_ = dead.Close()
	dp, _ := strconv.Atoi(deadPort)
	p := newPair(t, pairOpts{appPorts: []uint16{uint16(dp)},
		app: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			served.Add(1)
			if r.URL.Path == "/fake" {
				// An app claiming what only a proxy may say.
				w.Header().Set("Trellis-Unprocessed", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			b, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			_, _ = w.Write(b)
		}),
	})
	// A second listener of the same inbound proxy stands for a second pod
	// whose app has exited: its endpoint's target port is closed.
	ln := listen(t)
	go func() { _ = p.in.Serve(ln) }()
	live := p.bal.Endpoints()[0]
	gone := balance.Endpoint{Addr: ln.Addr().String(), Weight: 1000, Identity: serverID, TargetPort: uint32(dp)}

	post := func(path string, body []byte) (*http.Response, string) {
		t.Helper()
		resp, err := p.client.Post(url(path), "application/octet-stream", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp, readAll(t, resp.Body)
	}
	small := bytes.Repeat([]byte("x"), 1000)
	large := bytes.Repeat([]byte("y"), 100<<10) // above the replay bound

	// Both endpoints: every replayable request ends on the live one. The
	// gone one joins at once, not ramped up by slow start.
	cfg := balance.DefaultConfig()
	cfg.SlowStart.Window = 0
	p.bal.SetConfig(cfg)
	p.bal.Update([]balance.Endpoint{gone, live})
	const n = 10
	for i := range n {
		body := small
		if i%2 == 0 {
			body = nil
		}
		resp, got := post("/echo", body)
		if resp.StatusCode != 200 || got != string(body) {
			t.Fatalf("request %d: %d, %d bytes back, want 200 and %d bytes: %q", i, resp.StatusCode, len(got), len(body), resp.Header.Get("Trellis-Error"))
		}
	}
	if got := served.Load(); got != n {
		t.Fatalf("app served %d requests, want exactly %d", got, n)
	}
	if counter(t, p.outReg, "trellis_retries_total", map[string]string{"reason": "unprocessed"}) < 1 {
		t.Fatal("no retry counted with reason unprocessed")
	}

	// Only the gone endpoint: a replayable request finds no other
	// endpoint; a large body cannot be replayed, so the peer's answer
	// comes back as it is (without the mesh-only header).
	p.bal.Update([]balance.Endpoint{gone})
	resp, _ := post("/echo", small)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("Trellis-Error"), "no reachable endpoint") {
		t.Fatalf("small body, no live endpoint: %d %q", resp.StatusCode, resp.Header.Get("Trellis-Error"))
	}
	resp, _ = post("/echo", large)
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(resp.Header.Get("Trellis-Error"), "connecting to app") {
		t.Fatalf("large body: %d %q", resp.StatusCode, resp.Header.Get("Trellis-Error"))
	}
	if _, ok := resp.Header["Trellis-Unprocessed"]; ok {
		t.Fatal("the mesh-only header reached the client")
	}

	// The app's own header of that name is not believed.
	p.bal.Update([]balance.Endpoint{live})
	before := served.Load()
	resp, _ = post("/fake", nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/fake: %d", resp.StatusCode)
	}
	if _, ok := resp.Header["Trellis-Unprocessed"]; ok {
		t.Fatal("the app's Trellis-Unprocessed header passed the inbound proxy")
	}
	if got := served.Load() - before; got != 1 {
		t.Fatalf("/fake served %d times, want 1", got)
	}
}
