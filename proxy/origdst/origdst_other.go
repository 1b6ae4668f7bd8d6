//go:build !linux

package origdst

import (
	"net"
	"net/netip"
)

// Get is not available outside linux: transparent mode needs netfilter.
func Get(c net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrUnsupported
}
