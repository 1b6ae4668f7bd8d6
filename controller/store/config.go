// Package store holds the local-mode mesh description: the validation of
// the YAML file (docs/local-mode.md, types in internal/meshconfig),
// authority resolution and a watcher that reloads the file and notifies
// subscribers.
package store

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/controller/authority"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/internal/meshconfig"
	"github.com/trellis-mesh/trellis/internal/pki"
	"github.com/trellis-mesh/trellis/internal/storepolicy"
	"github.com/trellis-mesh/trellis/internal/storeroutes"
)

// Defaults and limits of the store file.
const (
	DefaultClusterDomain       = authority.DefaultClusterDomain
	DefaultCertificateLifetime = pki.DefaultWorkloadLifetime
	MinCertificateLifetime     = 5 * time.Second
	MaxCertificateLifetime     = 365 * 24 * time.Hour
	MinTokenLength             = 16
	MaxWeight                  = 1_000_000
	// MaxFileSize bounds what the loader reads, so a runaway file cannot
	// exhaust memory.
	MaxFileSize = 8 << 20
)

// Protocols a service port may declare.
const (
	ProtocolDetect = ""
	ProtocolHTTP   = "http"
	ProtocolGRPC   = "grpc"
	// ProtocolH2C: the app speaks HTTP/2 with prior knowledge only.
	ProtocolH2C    = "h2c"
	ProtocolOpaque = "opaque"
)

// Config is a validated store file, with defaults applied and indexes built.
// It is immutable once built; a reload makes a new one.
type Config struct {
	TrustDomain         string
	ClusterDomain       string
	CertificateLifetime time.Duration
	Services            []*ServiceInfo
	Workloads           []*WorkloadInfo
	// Policies are the inbound policy objects (internal/storepolicy).
	Policies storepolicy.Policies
	// Routes are the outbound mesh routes (internal/storeroutes).
	Routes storeroutes.Routes

	services map[nsName]*ServiceInfo
	byAddr   map[netip.AddrPort]*WorkloadInfo
	byID     map[identity.ID][]*WorkloadInfo
}

type nsName struct{ ns, name string }

// ServiceInfo is a validated service.
type ServiceInfo struct {
	Name      string
	Namespace string
	// Ports maps a port number to its protocol.
	Ports map[uint32]string
	// Backends lists, per port, the endpoints backing it.
	Backends map[uint32][]Backend
}

// Backend is one workload endpoint of a service port.
type Backend struct {
	Workload   *WorkloadInfo
	TargetPort uint32
	Weight     uint32
}

// WorkloadInfo is a validated workload.
type WorkloadInfo struct {
	Name      string
	Namespace string
	Identity  identity.ID
	Token     string
	ProxyAddr netip.AddrPort
	Zone      string
	Labels    map[string]string
	// TapAddr is the proxy's tap listener (invalid: none recorded).
	TapAddr netip.AddrPort
	// Endpoints as declared, resolved to their service.
	Endpoints []WorkloadEndpoint
}

// WorkloadEndpoint is an endpoint of a workload with its service resolved.
type WorkloadEndpoint struct {
	Service    *ServiceInfo
	Port       uint32
	TargetPort uint32
	Weight     uint32
}

// Parse decodes and validates a store file. Unknown fields are errors.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("store file is %d bytes, more than the %d allowed", len(data), MaxFileSize)
	}
	var f meshconfig.File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("decode store file: %w", err)
	}
	return build(&f)
}

// build validates the file and returns the Config it describes.
func build(f *meshconfig.File) (*Config, error) {
	c := &Config{
		TrustDomain:         f.TrustDomain,
		ClusterDomain:       strings.ToLower(f.ClusterDomain),
		CertificateLifetime: DefaultCertificateLifetime,
		services:            map[nsName]*ServiceInfo{},
		byAddr:              map[netip.AddrPort]*WorkloadInfo{},
		byID:                map[identity.ID][]*WorkloadInfo{},
	}
	if c.TrustDomain == "" {
		c.TrustDomain = identity.DefaultTrustDomain
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	// Validate the trust domain through a throwaway identity, so the rules
	// are exactly the ones identity names use.
	if err := (identity.ID{TrustDomain: c.TrustDomain, Namespace: "x", ServiceAccount: "x"}).Validate(); err != nil {
		return nil, fmt.Errorf("trustDomain: %w", err)
	}
	if err := (identity.ID{TrustDomain: c.ClusterDomain, Namespace: "x", ServiceAccount: "x"}).Validate(); err != nil {
		return nil, fmt.Errorf("clusterDomain: %w", err)
	}
	if f.CertificateLifetime != "" {
		d, err := time.ParseDuration(f.CertificateLifetime)
		if err != nil {
			return nil, fmt.Errorf("certificateLifetime: %w", err)
		}
		if d < MinCertificateLifetime || d > MaxCertificateLifetime {
			return nil, fmt.Errorf("certificateLifetime: %s is outside [%s, %s]", d, MinCertificateLifetime, MaxCertificateLifetime)
		}
		c.CertificateLifetime = d
	}

	for i, s := range f.Services {
		where := fmt.Sprintf("services[%d]", i)
		if err := validLabel(s.Name); err != nil {
			return nil, fmt.Errorf("%s.name: %w", where, err)
		}
		where = fmt.Sprintf("services[%d] (%s)", i, s.Name)
		if err := validLabel(s.Namespace); err != nil {
			return nil, fmt.Errorf("%s.namespace: %w", where, err)
		}
		where = fmt.Sprintf("services[%d] (%s.%s)", i, s.Name, s.Namespace)
		key := nsName{s.Namespace, s.Name}
		if _, dup := c.services[key]; dup {
			return nil, fmt.Errorf("%s: duplicate service", where)
		}
		if len(s.Ports) == 0 {
			return nil, fmt.Errorf("%s.ports: at least one port is required", where)
		}
		si := &ServiceInfo{Name: s.Name, Namespace: s.Namespace, Ports: map[uint32]string{}, Backends: map[uint32][]Backend{}}
		for j, p := range s.Ports {
			if err := validPort(p.Port); err != nil {
				return nil, fmt.Errorf("%s.ports[%d].port: %w", where, j, err)
			}
			switch p.Protocol {
			case ProtocolDetect, ProtocolHTTP, ProtocolH2C, ProtocolGRPC, ProtocolOpaque:
			default:
				return nil, fmt.Errorf("%s.ports[%d].protocol: %q is not one of http, h2c, grpc, opaque or \"\" (detect)", where, j, p.Protocol)
			}
			if _, dup := si.Ports[uint32(p.Port)]; dup {
				return nil, fmt.Errorf("%s.ports[%d]: duplicate port %d", where, j, p.Port)
			}
			si.Ports[uint32(p.Port)] = p.Protocol
		}
		c.services[key] = si
		c.Services = append(c.Services, si)
	}

	workloads := map[nsName]bool{}
	tokens := map[string]string{}
	for i, w := range f.Workloads {
		where := fmt.Sprintf("workloads[%d]", i)
		if err := validLabel(w.Name); err != nil {
			return nil, fmt.Errorf("%s.name: %w", where, err)
		}
		where = fmt.Sprintf("workloads[%d] (%s)", i, w.Name)
		if err := validLabel(w.Namespace); err != nil {
			return nil, fmt.Errorf("%s.namespace: %w", where, err)
		}
		where = fmt.Sprintf("workloads[%d] (%s.%s)", i, w.Name, w.Namespace)
		key := nsName{w.Namespace, w.Name}
		if workloads[key] {
			return nil, fmt.Errorf("%s: duplicate workload", where)
		}
		workloads[key] = true
		if w.ServiceAccount == "" {
			return nil, fmt.Errorf("%s.serviceAccount: required", where)
		}
		id, err := identity.New(c.TrustDomain, w.Namespace, w.ServiceAccount)
		if err != nil {
			return nil, fmt.Errorf("%s.serviceAccount: %w", where, err)
		}
		// The token is never echoed in errors: it is a credential.
		if len(w.Token) < MinTokenLength {
			return nil, fmt.Errorf("%s.token: required, at least %d characters", where, MinTokenLength)
		}
		if other, dup := tokens[w.Token]; dup {
			return nil, fmt.Errorf("%s.token: the same token is used by workload %s; each workload needs its own", where, other)
		}
		tokens[w.Token] = w.Name + "." + w.Namespace
		if w.ProxyAddr == "" {
			return nil, fmt.Errorf("%s.proxyAddr: required (ip:port of the proxy's inbound listener)", where)
		}
		ap, err := netip.ParseAddrPort(w.ProxyAddr)
		if err != nil {
			return nil, fmt.Errorf("%s.proxyAddr: %q is not ip:port: %w", where, w.ProxyAddr, err)
		}
		if ap.Port() == 0 {
			return nil, fmt.Errorf("%s.proxyAddr: port 0 is not allowed", where)
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().Zone() != "" {
			return nil, fmt.Errorf("%s.proxyAddr: IPv6 zones are not allowed", where)
		}
		if other, dup := c.byAddr[ap]; dup {
			return nil, fmt.Errorf("%s.proxyAddr: %s is already the address of workload %s.%s", where, ap, other.Name, other.Namespace)
		}
		if w.AdminAddr != "" {
			if _, err := netip.ParseAddrPort(w.AdminAddr); err != nil {
				return nil, fmt.Errorf("%s.adminAddr: %q is not ip:port: %w", where, w.AdminAddr, err)
			}
		}
		if w.TapAddr != "" {
			if _, err := netip.ParseAddrPort(w.TapAddr); err != nil {
				return nil, fmt.Errorf("%s.tapAddr: %q is not ip:port: %w", where, w.TapAddr, err)
			}
		}
		if len(w.Zone) > 253 {
			return nil, fmt.Errorf("%s.zone: longer than 253 characters", where)
		}
		labels := map[string]string{}
		for k, v := range w.Labels {
			if k == "" {
				return nil, fmt.Errorf("%s.labels: empty label name", where)
			}
			if !validLabelName(k) {
				return nil, fmt.Errorf("%s.labels: %q is not a valid label name (letters, digits and '_', not starting with a digit)", where, k)
			}
			if k == "workload" || k == "namespace" {
				return nil, fmt.Errorf("%s.labels: %q is set by the controller and cannot be overridden", where, k)
			}
			labels[k] = v
		}
		wi := &WorkloadInfo{Name: w.Name, Namespace: w.Namespace, Identity: id, Token: w.Token, ProxyAddr: ap, Zone: w.Zone, Labels: labels}
		wi.TapAddr, _ = netip.ParseAddrPort(w.TapAddr) // validated above
		seen := map[nsName]bool{}
		for j, e := range w.Endpoints {
			ew := fmt.Sprintf("%s.endpoints[%d]", where, j)
			si := c.services[nsName{w.Namespace, e.Service}]
			if si == nil {
				return nil, fmt.Errorf("%s.service: no service %q in namespace %q", ew, e.Service, w.Namespace)
			}
			if err := validPort(e.Port); err != nil {
				return nil, fmt.Errorf("%s.port: %w", ew, err)
			}
			if _, ok := si.Ports[uint32(e.Port)]; !ok {
				return nil, fmt.Errorf("%s.port: service %s.%s has no port %d", ew, si.Name, si.Namespace, e.Port)
			}
			if e.TargetPort != 0 {
				if err := validPort(e.TargetPort); err != nil {
					return nil, fmt.Errorf("%s.targetPort: %w", ew, err)
				}
			}
			weight := 1
			if e.Weight != nil {
				weight = *e.Weight
				if weight < 1 || weight > MaxWeight {
					return nil, fmt.Errorf("%s.weight: %d is outside [1, %d]", ew, weight, MaxWeight)
				}
			}
			k := nsName{e.Service, fmt.Sprint(e.Port)}
			if seen[k] {
				return nil, fmt.Errorf("%s: the workload already backs %s port %d", ew, e.Service, e.Port)
			}
			seen[k] = true
			we := WorkloadEndpoint{Service: si, Port: uint32(e.Port), TargetPort: uint32(e.TargetPort), Weight: uint32(weight)}
			wi.Endpoints = append(wi.Endpoints, we)
			si.Backends[we.Port] = append(si.Backends[we.Port], Backend{Workload: wi, TargetPort: we.TargetPort, Weight: we.Weight})
		}
		c.byAddr[ap] = wi
		c.byID[id] = append(c.byID[id], wi)
		c.Workloads = append(c.Workloads, wi)
	}
	p, err := storepolicy.BuildIn(f.Policies, c.TrustDomain, func(ns, name string) bool { return c.hasServicePort(ns, name, 0) })
	if err != nil {
		return nil, err
	}
	c.Policies = p
	if c.Routes, err = storeroutes.Build(f.Routes, c.hasServicePort); err != nil {
		return nil, err
	}
	return c, nil
}

// hasServicePort reports whether the file has the service ns/name with
// port (0: any).
func (c *Config) hasServicePort(ns, name string, port uint32) bool {
	si := c.services[nsName{ns, name}]
	if si == nil {
		return false
	}
	_, ok := si.Ports[port]
	return ok || port == 0
}

// Service returns the service name.namespace, or nil.
func (c *Config) Service(namespace, name string) *ServiceInfo {
	return c.services[nsName{namespace, name}]
}

// WorkloadsWithIdentity returns the workloads running as id.
func (c *Config) WorkloadsWithIdentity(id identity.ID) []*WorkloadInfo {
	return c.byID[id]
}

// WorkloadAt returns the workload whose proxy listens on addr, or nil.
func (c *Config) WorkloadAt(addr netip.AddrPort) *WorkloadInfo {
	return c.byAddr[netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())]
}

func validPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is outside 1-65535", p)
	}
	return nil
}

// validLabel checks a DNS label (RFC 1123): what Kubernetes requires of
// namespace and service names.
func validLabel(s string) error { return authority.ValidLabel(s) }

func validLabelName(s string) bool {
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch == '_':
		case ch >= '0' && ch <= '9' && i > 0:
		default:
			return false
		}
	}
	return len(s) > 0 && len(s) <= 128
}
