package redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/trellis-mesh/trellis/proxy/origdst"
)

// Probe targets: documentation addresses that are never routed anywhere,
// so a connection to them only succeeds if something redirected it.
var (
	probeAddr4 = netip.MustParseAddr("192.0.2.1")
	probeAddr6 = netip.MustParseAddr("2001:db8::1")
)

// ProbeTarget is the address Probe dials: a documentation address and the
// first port from 9 up that is not skipped.
func ProbeTarget(c Config, f Family) (netip.AddrPort, error) {
	addr := probeAddr4
	if f == IPv6 {
		addr = probeAddr6
	}
	for p := uint32(9); p <= 65535; p++ {
		if p == uint32(c.OutboundPort) || p == uint32(c.InboundPort) || inRanges(uint16(p), c.SkipOutbound) {
			continue
		}
		return netip.AddrPortFrom(addr, uint16(p)), nil
	}
	return netip.AddrPort{}, errors.New("every outbound port is skipped: nothing is redirected")
}

func inRanges(p uint16, rs []PortRange) bool {
	for _, r := range rs {
		if r.Contains(p) {
			return true
		}
	}
	return false
}

// Probe proves outbound redirection by behaviour, needing no capability:
// it listens on the proxy's outbound port on loopback, dials an address
// that exists nowhere, and checks the connection arrives at its listener
// with that address as SO_ORIGINAL_DST. It must run before the proxy (the
// port must be free) and as a uid other than the proxy's.
func Probe(ctx context.Context, c Config, f Family, timeout time.Duration) error {
	target, err := ProbeTarget(c, f)
	if err != nil {
		return err
	}
	uid := syscall.Geteuid()
	if uid >= 0 && uint32(uid) == c.ProxyUID {
		return fmt.Errorf("probe runs as the proxy uid %d, whose traffic is never redirected: run it as another user", uid)
	}
	lo := "127.0.0.1"
	if f == IPv6 {
		lo = "::1"
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort(lo, strconv.Itoa(int(c.OutboundPort))))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s probe: outbound port %d is in use (run the check before the proxy starts): %w", f, c.OutboundPort, err)
		}
		return fmt.Errorf("%s probe: %w", f, err)
	}
	defer ln.Close()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	var d net.Dialer
	client, err := d.DialContext(ctx, "tcp", target.String())
	if err != nil {
		return fmt.Errorf("%w (%s probe): connecting to %s was not redirected to port %d: %w",
			ErrNotInstalled, f, target, c.OutboundPort, err)
	}
	defer client.Close()
	var server net.Conn
	select {
	case server = <-accepted:
	case <-ctx.Done():
	}
	if server == nil {
		return fmt.Errorf("%w (%s probe): a connection to %s succeeded but did not reach port %d",
			ErrNotInstalled, f, target, c.OutboundPort)
	}
	defer server.Close()
	got, err := origdst.Get(server)
	if err != nil {
		return fmt.Errorf("%s probe: reading the original destination: %w", f, err)
	}
	if got.Addr().Unmap() != target.Addr() || got.Port() != target.Port() {
		return fmt.Errorf("%w (%s probe): original destination is %s, want %s", ErrNotInstalled, f, got, target)
	}
	return nil
}

// NoIPv6 reports whether a probe error means the namespace has no IPv6
// networking at all (no address or no route), as opposed to missing rules.
func NoIPv6(err error) bool {
	return errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EADDRNOTAVAIL) ||
		errors.Is(err, syscall.EAFNOSUPPORT)
}
