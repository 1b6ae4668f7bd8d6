//go:build linux

package netns

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"
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
