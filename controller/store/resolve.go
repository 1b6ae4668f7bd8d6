package store

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Target is what an authority names: a service port, or a single workload
// addressed by its proxy's ip:port.
type Target struct {
	// Service and Port are set when the authority names a service port.
	Service *ServiceInfo
	Port    uint32
	// Workload is set when the authority is a workload's proxyAddr.
	Workload *WorkloadInfo
}

// Exists reports whether the authority names something in the store.
func (t Target) Exists() bool { return t.Service != nil || t.Workload != nil }

// Authority is a parsed destination: either a host name and port or an IP
// address and port.
type Authority struct {
	// Host is lower-cased, without a trailing dot; empty when IP is set.
	Host string
	IP   netip.Addr
	Port uint32
}

// ParseAuthority splits "host:port" or "ip:port" ("[v6]:port" for IPv6).
// The port is required: a destination without one is ambiguous.
func ParseAuthority(s string) (Authority, error) {
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
		if err := validLabel(l); err != nil {
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

// Resolve finds what an authority names. callerNamespace, when not empty,
// lets a bare "name:port" resolve in the caller's namespace, as Kubernetes
// DNS search paths do. Accepted host forms: name (with callerNamespace),
// name.ns, name.ns.svc, name.ns.svc.<clusterDomain>.
func (c *Config) Resolve(a Authority, callerNamespace string) Target {
	if a.Host == "" {
		if w := c.WorkloadAt(netip.AddrPortFrom(a.IP, uint16(a.Port))); w != nil {
			return Target{Workload: w}
		}
		return Target{}
	}
	name, ns, ok := c.splitHost(a.Host, callerNamespace)
	if !ok {
		return Target{}
	}
	s := c.Service(ns, name)
	if s == nil {
		return Target{}
	}
	if _, ok := s.Ports[a.Port]; !ok {
		return Target{}
	}
	return Target{Service: s, Port: a.Port}
}

func (c *Config) splitHost(host, callerNamespace string) (name, ns string, ok bool) {
	parts := strings.Split(host, ".")
	switch {
	case len(parts) == 1:
		if callerNamespace == "" {
			return "", "", false
		}
		return parts[0], callerNamespace, true
	case len(parts) == 2:
		return parts[0], parts[1], true
	case len(parts) == 3 && parts[2] == "svc":
		return parts[0], parts[1], true
	case len(parts) > 3 && parts[2] == "svc" && strings.Join(parts[3:], ".") == c.ClusterDomain:
		return parts[0], parts[1], true
	}
	return "", "", false
}

// FQDN returns the service's fully qualified name with the cluster domain.
func (c *Config) FQDN(s *ServiceInfo) string {
	return s.Name + "." + s.Namespace + ".svc." + c.ClusterDomain
}
