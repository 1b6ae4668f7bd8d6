package proxy

import (
	"slices"
	"testing"

	"github.com/trellis-mesh/trellis/proxy/outbound"
)

func TestConfiguredAppPorts(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want []uint16
	}{
		{"explicit: app-addr and app-ports", Config{Mode: outbound.ModeExplicit, AppAddr: "127.0.0.1:8080", AppPorts: []uint16{9090, 8080}}, []uint16{8080, 9090}},
		{"explicit: IPv6 app-addr", Config{Mode: outbound.ModeExplicit, AppAddr: "[::1]:7000"}, []uint16{7000}},
		{"explicit: app-addr without a port", Config{Mode: outbound.ModeExplicit, AppAddr: "127.0.0.1"}, nil},
		{"explicit: port 0", Config{Mode: outbound.ModeExplicit, AppAddr: "127.0.0.1:0"}, nil},
		{"transparent: app-addr is a fallback, not a port of the app", Config{Mode: outbound.ModeTransparent, AppAddr: "127.0.0.1:8080"}, nil},
		{"transparent: app-ports", Config{Mode: outbound.ModeTransparent, AppPorts: []uint16{5000}}, []uint16{5000}},
	} {
		if got := configuredAppPorts(tc.cfg); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestValidateExternalWorkload: --external-workload is NAMESPACE/NAME of
// the identity's namespace.
func TestValidateExternalWorkload(t *testing.T) {
	for _, tc := range []struct {
		ew string
		ok bool
	}{
		{"", true},
		{"shop/legacy", true},
		{"shop/legacy.vm-1", true},
		{"legacy", false},
		{"other/legacy", false},
		{"shop/Legacy", false},
	} {
		cfg := Config{
			ControllerAddr: "127.0.0.1:8086", TrustAnchors: "a.pem", Identity: "spiffe://cluster.local/ns/shop/sa/legacy", TokenFile: "t",
			OutboundAddr: "127.0.0.1:4140", InboundAddr: "0.0.0.0:4143", AdminAddr: "0.0.0.0:4191", Mode: "explicit", AppAddr: "127.0.0.1:8080",
			DefaultInboundPolicy: "all-unauthenticated", TraceSampleRatio: 1, ExternalWorkload: tc.ew,
		}
		if err := cfg.validate(); (err == nil) != tc.ok {
			t.Errorf("--external-workload %q: %v, want ok %v", tc.ew, err, tc.ok)
		}
	}
}
