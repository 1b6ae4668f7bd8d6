package inbound

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/trellis-mesh/trellis/proxy/metrics"
)

func TestAppTargetsForPort(t *testing.T) {
	own := func() []uint16 { return []uint16{4140, 4143, 4191, 4190} }
	explicit := Config{AppAddr: "127.0.0.1:8080", AppPorts: []uint16{9000, 4191}, OwnPorts: own}
	transparent := Config{Transparent: true, AppIP: "10.1.2.3", OwnPorts: own}
	cases := []struct {
		name string
		cfg  Config
		port uint16
		want string // "" when refused
	}{
		{"explicit app port", explicit, 8080, "127.0.0.1:8080"},
		{"explicit listed app port", explicit, 9000, "127.0.0.1:9000"},
		{"explicit other loopback port", explicit, 9001, ""},
		{"explicit admin port", explicit, 4191, ""}, // listed in AppPorts too: own wins
		{"explicit outbound port", explicit, 4140, ""},
		{"explicit inbound port", explicit, 4143, ""},
		{"explicit tap port", explicit, 4190, ""},
		{"transparent app port on the pod IP", transparent, 8080, "10.1.2.3:8080"},
		{"transparent any non-own port", transparent, 6379, "10.1.2.3:6379"},
		{"transparent admin port", transparent, 4191, ""},
		{"transparent outbound port", transparent, 4140, ""},
		{"transparent inbound port", transparent, 4143, ""},
		{"transparent tap port", transparent, 4190, ""},
		{"transparent without app IP", Config{Transparent: true, OwnPorts: own}, 8080, "127.0.0.1:8080"},
		{"transparent IPv6 pod IP", Config{Transparent: true, AppIP: "fd00::5", OwnPorts: own}, 8080, "[fd00::5]:8080"},
		{"explicit IPv6 app", Config{AppAddr: "[::1]:8080"}, 8080, "[::1]:8080"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			at, err := newAppTargets(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := at.forPort(tc.port)
			if tc.want == "" {
				var r *refusal
				if !errors.As(err, &r) || r.reason != metrics.ReasonForbiddenPort {
					t.Fatalf("port %d: got %q, %v; want a forbidden_port refusal", tc.port, got, err)
				}
				// The caller is told which listeners are the proxy's: all
				// of them, the tap's included.
				if slices.Contains(own(), tc.port) &&
					!strings.Contains(r.msg, "own listeners (inbound, outbound, admin or tap)") {
					t.Errorf("port %d: refusal %q does not name every listener", tc.port, r.msg)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("port %d: got %q, %v; want %q", tc.port, got, err, tc.want)
			}
		})
	}
}

func TestNewAppTargetsRejects(t *testing.T) {
	for _, cfg := range []Config{
		{AppAddr: "no-port"},
		{AppAddr: "127.0.0.1:0"},
		{AppAddr: "127.0.0.1:99999"},
		{Transparent: true, AppIP: "not-an-ip"},
	} {
		if _, err := newAppTargets(cfg); err == nil {
			t.Errorf("%+v: accepted", cfg)
		}
	}
}

// A caller without mesh TLS: the policy refuses it first, then a refused
// original destination (one of our own ports dialled on the pod IP).
func TestPlainRefusal(t *testing.T) {
	own := &refusal{reason: metrics.ReasonForbiddenPort, msg: "target port 4140 refused"}
	cases := []struct {
		policy    string
		targetErr error
		want      error
	}{
		{PolicyAllUnauthenticated, nil, nil},
		{PolicyAllUnauthenticated, own, own},
		{PolicyAllAuthenticated, nil, errUnauthenticated},
		{PolicyAllAuthenticated, own, errUnauthenticated},
	}
	for _, tc := range cases {
		p := &Proxy{cfg: Config{DefaultPolicy: tc.policy}}
		if got := p.plainRefusal(&connInfo{targetErr: tc.targetErr}); got != tc.want {
			t.Errorf("%s, targetErr %v: got %v, want %v", tc.policy, tc.targetErr, got, tc.want)
		}
	}
}
