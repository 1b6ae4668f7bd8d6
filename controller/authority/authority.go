// Package authority parses the destinations proxies ask about
// ("name.ns.svc.cluster.local:port", "10.0.0.1:80", "[fd00::1]:80"). It is
// a leaf both controller modes share: the local store and the Kubernetes
// endpoints source resolve the same parsed form, and neither imports the
// other.
package authority

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultClusterDomain is the DNS suffix of services when none is
// configured (name.ns.svc.cluster.local).
const DefaultClusterDomain = "cluster.local"

// Authority is a parsed destination: either a host name and port or an IP
// address and port.
type Authority struct {
	// Host is lower-cased, without a trailing dot; empty when IP is set.
	Host string
	IP   netip.Addr
	Port uint32
}

// Parse splits "host:port" or "ip:port" ("[v6]:port" for IPv6). The port
// is required: a destination without one is ambiguous.
func Parse(s string) (Authority, error) {
	if s == "" {
		return Authority{}, fmt.Errorf("empty authority")
	}
	if len(s) > 512 {
		return Authority{}, fmt.Errorf("authority longer than 512 characters")
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return Authority{}, fmt.Errorf("authority %q: missing :port", s)
	}
	host, portStr := s[:i], s[i+1:]
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 || portStr[0] == '+' {
		return Authority{}, fmt.Errorf("authority %q: port %q is not 1-65535", s, portStr)
	}
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return Authority{}, fmt.Errorf("authority %q: unterminated IPv6 literal", s)
		}
		ip, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return Authority{}, fmt.Errorf("authority %q: bad IPv6 literal", s)
		}
		return Authority{IP: ip.Unmap(), Port: uint32(port)}, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Is6() && !ip.Is4In6() {
			// Bare IPv6 with a port must be bracketed.
			return Authority{}, fmt.Errorf("authority %q: IPv6 addresses must be written [ip]:port", s)
		}
		return Authority{IP: ip.Unmap(), Port: uint32(port)}, nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return Authority{}, fmt.Errorf("authority %q: empty host", s)
	}
	for _, l := range strings.Split(host, ".") {
		if err := ValidLabel(l); err != nil {
			return Authority{}, fmt.Errorf("authority %q: host label %w", s, err)
		}
	}
	return Authority{Host: host, Port: uint32(port)}, nil
}

// String returns the authority in canonical form.
func (a Authority) String() string {
	if a.Host != "" {
		return a.Host + ":" + strconv.FormatUint(uint64(a.Port), 10)
	}
	return netip.AddrPortFrom(a.IP, uint16(a.Port)).String()
}

// ValidLabel checks a DNS label (RFC 1123): what Kubernetes requires of
// namespace and service names.
func ValidLabel(s string) error {
	if s == "" {
		return errors.New("required")
	}
	if len(s) > 63 {
		return fmt.Errorf("%q is longer than 63 characters", s)
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= '0' && ch <= '9':
		case ch == '-' && i > 0 && i < len(s)-1:
		default:
			return fmt.Errorf("%q is not a DNS label (lower-case letters, digits and inner '-')", s)
		}
	}
	return nil
}
