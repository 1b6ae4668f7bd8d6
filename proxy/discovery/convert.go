package discovery

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

// ToEndpoint converts an endpoint from the control plane. An endpoint whose
// identity is set but invalid is an error, never a plain-text endpoint: the
// caller skips it.
func ToEndpoint(wa *apiv1.WeightedAddr) (balance.Endpoint, error) {
	if wa == nil {
		return balance.Endpoint{}, errors.New("endpoint: missing")
	}
	addr, err := tcpAddr(wa.GetAddr())
	if err != nil {
		return balance.Endpoint{}, fmt.Errorf("endpoint: %w", err)
	}
	ep := balance.Endpoint{
		Addr:     addr,
		Weight:   max(wa.GetWeight(), 1),
		Protocol: wa.GetProtocolHint().GetProtocol(),
		Zone:     wa.GetZone(),
		Labels:   maps.Clone(wa.GetMetricLabels()),
	}
	if _, ok := apiv1.ProtocolHint_Protocol_name[int32(ep.Protocol)]; !ok {
		// An unknown future hint: detect rather than trust it.
		ep.Protocol = apiv1.ProtocolHint_UNKNOWN
	}
	ep.TargetPort = wa.GetTargetPort()
	if ep.TargetPort > 65535 {
		return balance.Endpoint{}, fmt.Errorf("endpoint %s: target port %d out of range", addr, ep.TargetPort)
	}
	if ti := wa.GetTlsIdentity(); ti != nil && (ti.GetSpiffeId() != "" || ti.GetServerName() != "") {
		id, err := identity.Parse(ti.GetSpiffeId())
		if err != nil {
			return balance.Endpoint{}, fmt.Errorf("endpoint %s: tls identity: %w", addr, err)
		}
		sn := ti.GetServerName()
		switch {
		case sn == "" || sn == id.ServerName():
		case routingName(sn):
			ep.ServerName = sn // through a gateway, which routes on it
		default:
			return balance.Endpoint{}, fmt.Errorf("endpoint %s: server name %q does not match identity %s", addr, sn, id)
		}
		ep.Identity = id
	}
	return ep, nil
}

// routingName: a multicluster gateway's routing name,
// <port>.<service>.<namespace>.svc.<cluster domain> (proxy/gateway), a DNS
// name. Only the SNI changes with it: the identity is still verified.
func routingName(sn string) bool {
	labels := strings.Split(sn, ".")
	return len(labels) >= 5 && labels[3] == "svc" && identity.ValidateTrustDomain(sn) == nil
}

// tcpAddr formats a TcpAddress as a dialable "ip:port".
func tcpAddr(a *apiv1.TcpAddress) (string, error) {
	if a == nil {
		return "", errors.New("address missing")
	}
	ip, err := netip.ParseAddr(a.GetIp())
	if err != nil {
		return "", fmt.Errorf("address ip %q: %w", a.GetIp(), err)
	}
	if ip.Zone() != "" {
		return "", fmt.Errorf("address ip %q: zoned addresses are not endpoints", a.GetIp())
	}
	if a.GetPort() == 0 || a.GetPort() > 65535 {
		return "", fmt.Errorf("address port %d out of range", a.GetPort())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.GetPort())).String(), nil
}

// ToSelf returns ep reached through self, the pod's own inbound listener
// (see Options.Self), when ep is a meshed endpoint at self's IP whose
// address is the app's port (no target port): then its address becomes
// self and its target port the app's. Any other ep is returned as is.
func ToSelf(ep balance.Endpoint, self netip.AddrPort) balance.Endpoint {
	if !self.IsValid() || ep.Identity.IsZero() || ep.TargetPort != 0 {
		return ep
	}
	ap, err := netip.ParseAddrPort(ep.Addr)
	if err != nil || ap.Addr().Unmap() != self.Addr().Unmap() || ap.Port() == self.Port() {
		return ep
	}
	ep.Addr = self.String()
	ep.TargetPort = uint32(ap.Port())
	return ep
}
