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
