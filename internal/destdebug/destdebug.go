// Package destdebug is the document of the controller's read-only
// /debug/destination admin endpoint (what Destination.Get answers now for
// one authority), shared by the controller that serves it and
// `trellis diagnostics endpoints` that reads it.
package destdebug

import (
	"cmp"
	"net"
	"slices"
	"strconv"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Path is the endpoint's path on the controller's admin port, followed by
// "/" and the authority as a proxy asks for it (name.ns.svc.cluster.local:
// port); an optional query caller-namespace= says how a bare "name:port"
// resolves. The authority is in the path, not the query, so the API
// server's pod proxy (which takes a path) reaches it.
const Path = "/debug/destination"

// MaxQuery bounds the query string the endpoint accepts.
const MaxQuery = 256

// Answer is what the controller's Destination service would send first on
// a new Get stream for Path, as one document.
type Answer struct {
	Path            string `json:"path"`
	CallerNamespace string `json:"callerNamespace,omitempty"`
	// Service is the canonical service port it names ("" when none).
	Service string `json:"service,omitempty"`
	// Exists is false when the authority names nothing the controller knows.
	Exists    bool       `json:"exists"`
	Endpoints []Endpoint `json:"endpoints"`
	// Labels are the set's metric labels (sent with every Add).
	Labels map[string]string `json:"labels,omitempty"`
}

// Endpoint is one address of the answer.
type Endpoint struct {
	Address string `json:"address"`
	Weight  uint32 `json:"weight"`
	// Identity the endpoint must prove ("" = not meshed: plain text).
	Identity   string            `json:"identity,omitempty"`
	ServerName string            `json:"serverName,omitempty"`
	Zone       string            `json:"zone,omitempty"`
	Protocol   string            `json:"protocol"`
	TargetPort uint32            `json:"targetPort,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
}

// FromAddrs renders the addresses of an answer, sorted by address.
func FromAddrs(addrs []*apiv1.WeightedAddr) []Endpoint {
	out := make([]Endpoint, 0, len(addrs))
	for _, wa := range addrs {
		out = append(out, Endpoint{
			Address:    Addr(wa.GetAddr()),
			Weight:     cmp.Or(wa.GetWeight(), 1), // 0 means the default, 1
			Identity:   wa.GetTlsIdentity().GetSpiffeId(),
			ServerName: wa.GetTlsIdentity().GetServerName(),
			Zone:       wa.GetZone(),
			Protocol:   wa.GetProtocolHint().GetProtocol().String(),
			TargetPort: wa.GetTargetPort(),
			Labels:     wa.GetMetricLabels(),
		})
	}
	slices.SortFunc(out, func(a, b Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return out
}

// Addr renders a TcpAddress as host:port (brackets for IPv6).
func Addr(a *apiv1.TcpAddress) string {
	return net.JoinHostPort(a.GetIp(), strconv.FormatUint(uint64(a.GetPort()), 10))
}
