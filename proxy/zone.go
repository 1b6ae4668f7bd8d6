package proxy

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/proxy/discovery"
	"github.com/trellis-mesh/trellis/proxy/outbound"
)

// learnZone asks the Destination service about the proxy's own address
// (the pod IP and inbound port): its answer carries the zone of the pod's
// node, as for any endpoint. So zone-aware routing needs no injector
// change, no node labels in the pod and no API change. It retries until
// an answer comes or ctx ends; an answer without a zone leaves zone
// preference off.
func learnZone(ctx context.Context, r *discovery.Resolver, self string, log *slog.Logger) {
	wait := time.Second
	for {
		zone, err := selfZone(ctx, r, self)
		if err == nil {
			if zone != "" {
				r.SetZone(zone)
			}
			log.Info("zone learnt from the destination service", "zone", zone)
			return
		}
		log.Debug("zone not learnt yet", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Minute)
	}
}

func selfZone(ctx context.Context, r *discovery.Resolver, self string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	svc, err := r.Resolve(ctx, self)
	if err != nil {
		return "", err
	}
	for _, ep := range svc.Balancer().Endpoints() {
		if ep.Addr == self {
			return ep.Zone, nil
		}
	}
	return "", nil
}

// zoneSelf is the address the Destination service knows this proxy by,
// whose answer carries its zone: the pod IP and the inbound port when
// AppIP is set (transparent mode), else the inbound listener's own
// address when it names one (explicit mode: local mode's store file lists
// each workload's proxyAddr and zone). "": none to ask about.
func zoneSelf(cfg Config) string {
	if cfg.AppIP != "" {
		return net.JoinHostPort(cfg.AppIP, inboundPort(cfg.InboundAddr))
	}
	ap, err := netip.ParseAddrPort(cfg.InboundAddr)
	if err != nil || ap.Addr().IsUnspecified() || ap.Port() == 0 {
		return ""
	}
	return ap.String()
}

// inboundPort is the port of the inbound listener's address ("4143" when
// it cannot be parsed: the default).
func inboundPort(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		return port
	}
	return "4143"
}

// selfAddr is the pod's own inbound listener, AppIP at the inbound port,
// in transparent mode (discovery.Options.Self); invalid otherwise.
func selfAddr(cfg Config) netip.AddrPort {
	if cfg.Mode != outbound.ModeTransparent {
		return netip.AddrPort{}
	}
	ip, err := netip.ParseAddr(cfg.AppIP)
	if err != nil {
		return netip.AddrPort{}
	}
	port, err := strconv.ParseUint(inboundPort(cfg.InboundAddr), 10, 16)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port))
}
