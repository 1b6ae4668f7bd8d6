package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM to the server proxy while a slow
// request is in flight: the request completes and the proxy exits.
func TestGracefulShutdown(t *testing.T) {
	b := newBasicMesh(t)
	c := meshClient(b.client.OutboundAddr, 20*time.Second)
	defer c.CloseIdleConnections()
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, body, err := get(t.Context(), c, "/slow?ms=1000")
		r := result{body: string(body), err: err}
		if resp != nil {
			r.code = resp.StatusCode
		}
		done <- r
	}()
	select {
	case <-b.app.slowStarted:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request never reached the app")
	}
	if err := b.server.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.code != 200 || !strings.Contains(r.body, "slept 1000 ms") {
			t.Fatalf("in-flight request during SIGTERM: code %d body %q err %v", r.code, r.body, r.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("in-flight request did not complete")
	}
	exited, err := b.server.Process.Wait(10 * time.Second)
	if !exited {
		t.Fatal("server proxy still running 10s after SIGTERM with nothing in flight (grace is 5s)")
	}
	if err != nil {
		t.Errorf("server proxy exit after SIGTERM: %v (want status 0)", err)
	}
}
