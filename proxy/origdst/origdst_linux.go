//go:build linux

package origdst

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (linux/netfilter_ipv4.h) and
// IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h); both are 80.
const soOriginalDst = 80

// Get returns the address the peer originally dialed before a netfilter
// REDIRECT/DNAT sent the connection to us. Without such a rule the kernel
// has no conntrack NAT entry and getsockopt fails (ENOENT), which is
// returned as an error.
func Get(c net.Conn) (netip.AddrPort, error) {
	// Look through wrappers (tls.Conn, detect.PrefixConn) to the socket.
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("origdst: %T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	v6 := false
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(la.IP); ok && !a.Unmap().Is4() {
			v6 = true
		}
	}
	var (
		ap     netip.AddrPort
		sysErr error
	)
	ctlErr := raw.Control(func(fd uintptr) {
		if v6 {
			ap, sysErr = get6(int(fd))
		} else {
			ap, sysErr = get4(int(fd))
		}
	})
	if ctlErr != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", ctlErr)
	}
	if sysErr != nil {
		return netip.AddrPort{}, sysErr
	}
	return ap, nil
}

func get4(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, soOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("origdst: unexpected address family %d", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), portFromNet(sa.Port)), nil
}

func get6(fd int) (netip.AddrPort, error) {
	var sa unix.RawSockaddrInet6
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IPV6, soOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
	}
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("origdst: unexpected address family %d", sa.Family)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), portFromNet(sa.Port)), nil
}

// portFromNet converts the sockaddr port, stored in network byte order in a
// host-order uint16 field, to a host port.
func portFromNet(p uint16) uint16 {
	var b [2]byte
	*(*uint16)(unsafe.Pointer(&b[0])) = p
	return binary.BigEndian.Uint16(b[:])
}

func getsockopt(fd, level, name int, val unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name),
		uintptr(val), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
