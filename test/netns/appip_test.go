//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestProxyDialsPodIP holds the premise of --app-ip with trellis-init's real
// rules: a connection from the proxy's uid to the pod's own IP reaches the
// app directly (not redirected back into the proxy), and a server listening
// only on 127.0.0.1 in the pod is not reachable that way, so a mesh peer
// cannot reach it through the inbound proxy.
func TestProxyDialsPodIP(t *testing.T) {
	requirePrivileges(t, "iptables", "iptables-restore", "ip6tables", "ip6tables-restore")
	bins := buildRedirectBinaries(t)
	p := newRdPod(t, "tap")
	if out, err := runInit(p.pod, filepath.Join(bins, "trellis-init"), rdInitArgs...); err != nil {
		t.Fatalf("trellis-init: %v\n%s", err, out)
	}
	startRdServers(t, p)
	const loopbackOnly = 9090
	serveBanner(t, p.pod, "loopback-only", fmt.Sprintf("127.0.0.1:%d", loopbackOnly))

	runRdCases(t, p, []rdCase{
		{"proxy uid to the pod IP reaches the app", "pod", rdProxyUID, net.JoinHostPort(rdPodIP4, "8080"), "app -"},
		{"the loopback-only server answers on loopback", "pod", rdProxyUID, fmt.Sprintf("127.0.0.1:%d", loopbackOnly), "loopback-only -"},
	})
	got, err := dialAs(p.pod, rdProxyUID, net.JoinHostPort(rdPodIP4, fmt.Sprint(loopbackOnly)))
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("proxy uid to pod IP:%d (listening on 127.0.0.1 only): got %q, %v; want connection refused", loopbackOnly, got, err)
	}
}

// TestTransparentMeshAppIP is finding 1 of issue 9 with real proxies,
// real trellis redirection rules in B and a real mTLS peer: B's proxy runs
// with --app-ip (as the injector sets it). A's client dialling B's
// loopback-only port reaches nothing (B's proxy dials B's IP, where
// nothing listens there); dialling B's proxy's own outbound port gets 403
// from B's inbound; the app still answers, over mTLS, and sees the request
// from B's own IP. In transparent mode the address decides the service,
// so a Host naming secret.demo or self.demo does not lead there.
func TestTransparentMeshAppIP(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	tm := newTransparentMesh(ctx, t, "--app-ip", ipB)
	var hits atomic.Int64
	ln := tm.nsB.Listen(t, fmt.Sprintf("127.0.0.1:%d", loopbackOnlyPort))
	secret := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "secret\n")
	})}
	go func() { _ = secret.Serve(ln) }()
	t.Cleanup(func() { _ = secret.Close() })

	// Each request dials B at the service's port: in transparent mode the
	// address decides the service (a Host naming another service does not
	// redirect a request), so a peer names a port by dialling it.
	do := func(host string) (*http.Response, string) {
		t.Helper()
		var resp *http.Response
		var body []byte
		deadline := time.Now().Add(15 * time.Second)
		for {
			_, port, _ := net.SplitHostPort(host)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ipB, port)+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = host
			resp, err = tm.client.Do(req)
			if err == nil {
				body, _ = io.ReadAll(io.LimitReader(resp.Body, 300))
				resp.Body.Close()
				// Discovery may still be warming up for this service.
				if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
					return resp, string(body)
				}
			} else if time.Now().After(deadline) {
				t.Fatalf("GET Host %s: %v", host, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	resp, body := do(fmt.Sprintf("web.demo:%d", appPort))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the app: %s %q", resp.Status, body)
	}
	select {
	case r := <-tm.seen:
		if host, _, _ := net.SplitHostPort(r.RemoteAddr); host != ipB {
			t.Errorf("the app saw the request from %s, want B's own IP %s (--app-ip)", r.RemoteAddr, ipB)
		}
	default:
		t.Error("the app never saw the request")
	}

	resp, body = do(fmt.Sprintf("secret.demo:%d", loopbackOnlyPort))
	if resp.StatusCode == http.StatusOK || hits.Load() != 0 {
		t.Errorf("loopback-only port through the mesh: %s %q, %d hits; want no answer from it", resp.Status, body, hits.Load())
	}
	t.Logf("loopback-only port through the mesh: %s trellis-error=%q", resp.Status, resp.Header.Get("Trellis-Error"))

	// B's proxy's own outbound port, dialled from A: refused at B's
	// inbound, never reaching the outbound listener. (A mesh peer naming
	// it in the transport header gets "target port 4140 refused", counted
	// as forbidden_port: test/e2e TestSecurityLoopback and the security
	// suite; a Trellis client proxy no longer names it for a Host.)
	resp, body = do(fmt.Sprintf("self.demo:%d", outboundPort))
	if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "hello from B") {
		t.Errorf("B's proxy's outbound port from A: %s trellis-error=%q %q; want 403 from B's inbound", resp.Status, resp.Header.Get("Trellis-Error"), body)
	}
	t.Logf("B's proxy's outbound port from A: %s trellis-error=%q", resp.Status, resp.Header.Get("Trellis-Error"))
}
