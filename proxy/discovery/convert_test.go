package discovery

import (
	"net/netip"
	"testing"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
	"github.com/trellis-mesh/trellis/internal/identity"
	"github.com/trellis-mesh/trellis/proxy/balance"
)

func TestToEndpoint(t *testing.T) {
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
	wa := func(ip string, port uint32, mutate func(*apiv1.WeightedAddr)) *apiv1.WeightedAddr {
		w := &apiv1.WeightedAddr{Addr: &apiv1.TcpAddress{Ip: ip, Port: port}}
		if mutate != nil {
			mutate(w)
		}
		return w
	}
	tests := []struct {
		name     string
		in       *apiv1.WeightedAddr
		wantErr  bool
		wantAddr string
		wantID   identity.ID
		check    func(t *testing.T, w *apiv1.WeightedAddr)
	}{
		{name: "plain ipv4", in: wa("10.1.2.3", 8080, nil), wantAddr: "10.1.2.3:8080"},
		{name: "ipv6", in: wa("fd00::1", 80, nil), wantAddr: "[fd00::1]:80"},
		{name: "ipv4-mapped ipv6", in: wa("::ffff:10.0.0.1", 80, nil), wantAddr: "10.0.0.1:80"},
		{name: "meshed", in: wa("10.0.0.1", 4143, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: books.String(), ServerName: books.ServerName()}
		}), wantAddr: "10.0.0.1:4143", wantID: books},
		{name: "empty tls identity is plain", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) { w.TlsIdentity = &apiv1.TlsIdentity{} }), wantAddr: "10.0.0.1:80"},
		{name: "invalid spiffe id", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: "spiffe://cluster.local/ns/Demo/sa/books"}
		}), wantErr: true},
		{name: "server name without spiffe id", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{ServerName: books.ServerName()}
		}), wantErr: true},
		{name: "server name mismatch", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: books.String(), ServerName: "other.demo.serviceaccount.identity.cluster.local"}
		}), wantErr: true},
		{name: "a gateway's routing name: sent as the server name, identity kept", in: wa("172.31.255.2", 4180, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: books.String(), ServerName: "8080.books.demo.svc.cluster.local"}
		}), wantAddr: "172.31.255.2:4180", wantID: books, check: func(t *testing.T, w *apiv1.WeightedAddr) {
			if ep, _ := ToEndpoint(w); ep.ServerName != "8080.books.demo.svc.cluster.local" {
				t.Fatalf("server name %q", ep.ServerName)
			}
		}},
		{name: "a routing name that is not a DNS name", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.TlsIdentity = &apiv1.TlsIdentity{SpiffeId: books.String(), ServerName: "8080.books.demo.svc.Cluster_Local"}
		}), wantErr: true},
		{name: "nil", in: nil, wantErr: true},
		{name: "no address", in: &apiv1.WeightedAddr{}, wantErr: true},
		{name: "hostname", in: wa("books.demo", 80, nil), wantErr: true},
		{name: "port 0", in: wa("10.0.0.1", 0, nil), wantErr: true},
		{name: "port too big", in: wa("10.0.0.1", 70000, nil), wantErr: true},
		{name: "zoned", in: wa("fe80::1%eth0", 80, nil), wantErr: true},
		{name: "target port too big", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) { w.TargetPort = 1 << 20 }), wantErr: true},
		{name: "metadata", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.Weight = 0
			w.Zone = "z1"
			w.TargetPort = 8080
			w.ProtocolHint = &apiv1.ProtocolHint{Protocol: apiv1.ProtocolHint_GRPC}
			w.MetricLabels = map[string]string{"pod": "p1"}
		}), wantAddr: "10.0.0.1:80", check: func(t *testing.T, w *apiv1.WeightedAddr) {
			ep, _ := ToEndpoint(w)
			if ep.Weight != 1 || ep.Zone != "z1" || ep.TargetPort != 8080 || ep.Protocol != apiv1.ProtocolHint_GRPC || ep.Labels["pod"] != "p1" {
				t.Fatalf("endpoint = %+v", ep)
			}
			w.MetricLabels["pod"] = "changed"
			if ep.Labels["pod"] != "p1" {
				t.Fatal("labels alias the message")
			}
		}},
		{name: "unknown protocol hint", in: wa("10.0.0.1", 80, func(w *apiv1.WeightedAddr) {
			w.ProtocolHint = &apiv1.ProtocolHint{Protocol: 99}
		}), wantAddr: "10.0.0.1:80", check: func(t *testing.T, w *apiv1.WeightedAddr) {
			if ep, _ := ToEndpoint(w); ep.Protocol != apiv1.ProtocolHint_UNKNOWN {
				t.Fatalf("protocol = %v, want UNKNOWN", ep.Protocol)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ep, err := ToEndpoint(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if ep.Addr != tt.wantAddr || ep.Identity != tt.wantID {
				t.Fatalf("got %s %v, want %s %v", ep.Addr, ep.Identity, tt.wantAddr, tt.wantID)
			}
			if tt.check != nil {
				tt.check(t, tt.in)
			}
		})
	}
}

func FuzzToEndpoint(f *testing.F) {
	f.Add("10.0.0.1", uint32(80), uint32(1), "spiffe://cluster.local/ns/demo/sa/books", "", uint32(0), int32(0))
	f.Add("fd00::1", uint32(4143), uint32(0), "", "", uint32(8080), int32(3))
	f.Add("::ffff:1.2.3.4", uint32(65535), uint32(9), "spiffe://x/ns/a/sa/b", "b.a.serviceaccount.identity.x", uint32(1), int32(99))
	f.Add("", uint32(0), uint32(0), "spiffe://", "\x00", uint32(70000), int32(-1))
	f.Fuzz(func(t *testing.T, ip string, port, weight uint32, spiffe, serverName string, targetPort uint32, proto int32) {
		in := &apiv1.WeightedAddr{
			Addr:         &apiv1.TcpAddress{Ip: ip, Port: port},
			Weight:       weight,
			TlsIdentity:  &apiv1.TlsIdentity{SpiffeId: spiffe, ServerName: serverName},
			ProtocolHint: &apiv1.ProtocolHint{Protocol: apiv1.ProtocolHint_Protocol(proto)},
			TargetPort:   targetPort,
		}
		ep, err := ToEndpoint(in)
		if err != nil {
			return
		}
		ap, perr := netip.ParseAddrPort(ep.Addr)
		if perr != nil || ap.Port() == 0 || ap.Port() != uint16(port) {
			t.Fatalf("Addr %q not a dialable ip:port (%v)", ep.Addr, perr)
		}
		if ep.Weight < 1 || ep.TargetPort > 65535 {
			t.Fatalf("weight %d, target port %d", ep.Weight, ep.TargetPort)
		}
		if spiffe != "" || serverName != "" {
			// Asked for TLS: must have a valid identity, never plain text.
			if ep.Identity.IsZero() || ep.Identity.Validate() != nil || ep.Identity.String() != spiffe {
				t.Fatalf("identity %v for spiffe %q", ep.Identity, spiffe)
			}
		} else if !ep.Identity.IsZero() {
			t.Fatalf("identity %v without tls identity", ep.Identity)
		}
		if _, ok := apiv1.ProtocolHint_Protocol_name[int32(ep.Protocol)]; !ok {
			t.Fatalf("protocol %v", ep.Protocol)
		}
	})
}

func TestToSelf(t *testing.T) {
	books := identity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
	self := netip.MustParseAddrPort("10.0.0.5:4143")
	tests := []struct {
		name       string
		ep         balance.Endpoint
		self       netip.AddrPort
		wantAddr   string
		wantTarget uint32
	}{
		{"meshed at own IP: own inbound, app port named", balance.Endpoint{Addr: "10.0.0.5:8080", Identity: books}, self, "10.0.0.5:4143", 8080},
		{"another pod", balance.Endpoint{Addr: "10.0.0.6:8080", Identity: books}, self, "10.0.0.6:8080", 0},
		{"not meshed: the app as it is", balance.Endpoint{Addr: "10.0.0.5:8080"}, self, "10.0.0.5:8080", 0},
		{"target port already named", balance.Endpoint{Addr: "10.0.0.5:4143", Identity: books, TargetPort: 8080}, self, "10.0.0.5:4143", 8080},
		{"the inbound port itself", balance.Endpoint{Addr: "10.0.0.5:4143", Identity: books}, self, "10.0.0.5:4143", 0},
		{"no self (explicit mode)", balance.Endpoint{Addr: "10.0.0.5:8080", Identity: books}, netip.AddrPort{}, "10.0.0.5:8080", 0},
		{"ipv6", balance.Endpoint{Addr: "[fd00::5]:80", Identity: books}, netip.MustParseAddrPort("[fd00::5]:4143"), "[fd00::5]:4143", 80},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ToSelf(tt.ep, tt.self)
			if got.Addr != tt.wantAddr || got.TargetPort != tt.wantTarget || got.Identity != tt.ep.Identity {
				t.Errorf("ToSelf = %s target %d (%v), want %s target %d", got.Addr, got.TargetPort, got.Identity, tt.wantAddr, tt.wantTarget)
			}
		})
	}
}
