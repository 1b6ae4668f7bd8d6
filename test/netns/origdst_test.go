//go:build linux

package netns

import (
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/proxy/detect"
	"github.com/trellis-mesh/trellis/proxy/origdst"
)

// TestOrigDstRedirect checks origdst.Get behind a real iptables REDIRECT,
// for IPv4 and IPv6, on a bare conn and through a detect.PrefixConn.
func TestOrigDstRedirect(t *testing.T) {
	requirePrivileges(t, "iptables", "ip6tables")
	tests := []struct {
		name     string
		iptables string
		listen   string
		dialHost string
	}{
		{"ipv4", "iptables", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "ip6tables", "[::1]:0", "::1"},
	}
	ns := newNetns(t, uniq("trod"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := ns.Listen(t, tt.listen)
			port := ln.Addr().(*net.TCPAddr).Port
			// Nothing listens on 80: only the redirect makes the dial work.
			ns.Run(t, tt.iptables, "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "80",
				"-j", "REDIRECT", "--to-ports", strconv.Itoa(port))

			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					close(accepted)
					return
				}
				accepted <- c
			}()
			want := netip.AddrPortFrom(netip.MustParseAddr(tt.dialHost), 80)
			client, err := ns.DialContext(t.Context(), "tcp", want.String())
			if err != nil {
				t.Fatalf("dial %s through the redirect: %v", want, err)
			}
			defer client.Close()
			server, ok := <-accepted
			if !ok {
				t.Fatal("accept failed")
			}
			defer server.Close()
			if server.LocalAddr().(*net.TCPAddr).Port != port {
				t.Fatalf("accepted conn local addr %v, want port %d", server.LocalAddr(), port)
			}

			got, err := origdst.Get(server)
			if err != nil {
				t.Fatalf("origdst.Get: %v", err)
			}
			if got != want {
				t.Fatalf("origdst.Get = %v, want %v", got, want)
			}

			// Through the wrapper the listeners hand around after detection.
			if _, err := io.WriteString(client, "GET / HTTP/1.1\r\n"); err != nil {
				t.Fatal(err)
			}
			res, err := detect.Detect(server, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != detect.HTTP1 {
				t.Fatalf("detected %v, want http1", res.Protocol)
			}
			got, err = origdst.Get(res.Conn)
			if err != nil {
				t.Fatalf("origdst.Get through PrefixConn: %v", err)
			}
			if got != want {
				t.Fatalf("origdst.Get through PrefixConn = %v, want %v", got, want)
			}
		})
	}
}
