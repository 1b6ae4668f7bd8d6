package store

import (
	"net/netip"
	"strings"

	"github.com/trellis-mesh/trellis/controller/authority"
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

// Resolve finds what an authority names. callerNamespace, when not empty,
// lets a bare "name:port" resolve in the caller's namespace, as Kubernetes
// DNS search paths do. Accepted host forms: name (with callerNamespace),
// name.ns, name.ns.svc, name.ns.svc.<clusterDomain>.
func (c *Config) Resolve(a authority.Authority, callerNamespace string) Target {
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
