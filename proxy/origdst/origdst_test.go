package origdst

import (
	"net"
	"testing"
)

// Without a netfilter REDIRECT there is no original destination: Get must
// fail rather than return garbage. The redirected case is tested in
// test/netns, which needs root and iptables.
func TestGetWithoutRedirect(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}()
			client, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, ok := <-accepted
			if !ok {
				t.Fatal("accept failed")
			}
			defer server.Close()
			// Without NAT there is no original destination to recover: the
			// kernel answers with an error when connection tracking is off,
			// and with the connection's own destination when it is on (as
			// soon as any NAT rule exists on the host). Anything else is
			// garbage.
			ap, err := Get(server)
			if err != nil {
				t.Logf("error as expected without conntrack: %v", err)
				return
			}
			if want := server.LocalAddr().(*net.TCPAddr).AddrPort(); ap.Addr().Unmap() != want.Addr().Unmap() || ap.Port() != want.Port() {
				t.Fatalf("Get on a connection that was not redirected = %v, want an error or its own destination %v", ap, want)
			}
		})
	}
}

func TestGetWithoutSocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if ap, err := Get(a); err == nil {
		t.Fatalf("Get on net.Pipe = %v, want an error", ap)
	}
}
