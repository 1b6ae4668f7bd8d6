package redirect

import (
	"strings"
	"testing"
)

func mustPorts(t *testing.T, s string) []PortRange {
	t.Helper()
	rs, err := ParsePorts(s)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestRender(t *testing.T) {
	base := Config{ProxyUID: 2102, InboundPort: 4143, OutboundPort: 4140}
	tests := []struct {
		name    string
		cfg     func(*Config)
		family  Family
		present map[string]int
		want    string
	}{
		{
			name:   "ipv4 no skips fresh",
			family: IPv4,
			want: `*nat
:TRELLIS_PREROUTING - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_PREROUTING -p tcp -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -j RETURN
-A TRELLIS_OUTPUT -o lo -j RETURN
-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN
-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j TRELLIS_PREROUTING
-A OUTPUT -p tcp -j TRELLIS_OUTPUT
COMMIT
`,
		},
		{
			name: "ipv4 skips, other ports and uid",
			cfg: func(c *Config) {
				c.ProxyUID, c.InboundPort, c.OutboundPort = 1337, 15006, 15001
				c.SkipInbound = mustPorts(t, "4191,4143")
				c.SkipOutbound = mustPorts(t, "25, 8000-8100")
			},
			family: IPv4,
			want: `*nat
:TRELLIS_PREROUTING - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_PREROUTING -p tcp -m tcp --dport 4143 -j RETURN
-A TRELLIS_PREROUTING -p tcp -m tcp --dport 4191 -j RETURN
-A TRELLIS_PREROUTING -p tcp -j REDIRECT --to-ports 15006
-A TRELLIS_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A TRELLIS_OUTPUT -o lo -j RETURN
-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN
-A TRELLIS_OUTPUT -p tcp -m tcp --dport 25 -j RETURN
-A TRELLIS_OUTPUT -p tcp -m tcp --dport 8000:8100 -j RETURN
-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports 15001
-A PREROUTING -p tcp -j TRELLIS_PREROUTING
-A OUTPUT -p tcp -j TRELLIS_OUTPUT
COMMIT
`,
		},
		{
			name:    "ipv6 jumps present",
			cfg:     func(c *Config) { c.SkipOutbound = mustPorts(t, "53") },
			family:  IPv6,
			present: map[string]int{"PREROUTING": 1, "OUTPUT": 1},
			want: `*nat
:TRELLIS_PREROUTING - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_PREROUTING -p tcp -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -j RETURN
-A TRELLIS_OUTPUT -o lo -j RETURN
-A TRELLIS_OUTPUT -d ::1/128 -j RETURN
-A TRELLIS_OUTPUT -p tcp -m tcp --dport 53 -j RETURN
-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports 4140
COMMIT
`,
		},
		{
			name:    "duplicate jumps are removed, missing one added",
			family:  IPv4,
			present: map[string]int{"PREROUTING": 0, "OUTPUT": 3},
			want: `*nat
:TRELLIS_PREROUTING - [0:0]
:TRELLIS_OUTPUT - [0:0]
-A TRELLIS_PREROUTING -p tcp -j REDIRECT --to-ports 4143
-A TRELLIS_OUTPUT -m owner --uid-owner 2102 -j RETURN
-A TRELLIS_OUTPUT -o lo -j RETURN
-A TRELLIS_OUTPUT -d 127.0.0.0/8 -j RETURN
-A TRELLIS_OUTPUT -p tcp -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j TRELLIS_PREROUTING
-D OUTPUT -p tcp -j TRELLIS_OUTPUT
-D OUTPUT -p tcp -j TRELLIS_OUTPUT
COMMIT
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			if tt.cfg != nil {
				tt.cfg(&c)
			}
			got := Render(c, tt.family, tt.present)
			// The first line is a comment naming the family and binary.
			comment, body, _ := strings.Cut(got, "\n")
			if !strings.HasPrefix(comment, "# ") || !strings.Contains(comment, tt.family.Restore()) {
				t.Errorf("first line %q: want a comment naming %s", comment, tt.family.Restore())
			}
			if body != tt.want {
				t.Errorf("Render:\n%s\nwant:\n%s", body, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{ProxyUID: 2102, InboundPort: 4143, OutboundPort: 4140}, ""},
		{"same ports", Config{ProxyUID: 2102, InboundPort: 4140, OutboundPort: 4140}, "both 4140"},
		{"root proxy", Config{ProxyUID: 0, InboundPort: 4143, OutboundPort: 4140}, "uid"},
		{"zero port", Config{ProxyUID: 1, InboundPort: 0, OutboundPort: 4140}, "inbound port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseTableAndVerifyShapes(t *testing.T) {
	// What iptables-nft prints after Apply, with odd spacing.
	c := Config{ProxyUID: 2102, InboundPort: 4143, OutboundPort: 4140}
	var b strings.Builder
	b.WriteString("-P PREROUTING ACCEPT\n-P OUTPUT ACCEPT\n-N TRELLIS_OUTPUT\n-N TRELLIS_PREROUTING\n")
	b.WriteString("-A PREROUTING  -p tcp -j TRELLIS_PREROUTING\n-A OUTPUT -p tcp -j TRELLIS_OUTPUT\n")
	for _, ch := range Chains(c, IPv4) {
		for _, r := range ch.Rules {
			b.WriteString(r + "\n")
		}
	}
	tb := parseTable(b.String())
	if !tb.chains[OutputChain] || !tb.chains[PreroutingChain] {
		t.Fatalf("chains = %v", tb.chains)
	}
	if n := count(tb.rules["PREROUTING"], "-A PREROUTING -p tcp -j TRELLIS_PREROUTING"); n != 1 {
		t.Fatalf("jump count = %d, want 1 (whitespace not normalised?)", n)
	}
	if got := len(tb.rules[OutputChain]); got != 4 {
		t.Fatalf("%d output rules, want 4", got)
	}
}

func TestProbeTarget(t *testing.T) {
	c := Config{ProxyUID: 2102, InboundPort: 4143, OutboundPort: 4140, SkipOutbound: mustPorts(t, "1-20")}
	got, err := ProbeTarget(c, IPv4)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != "192.0.2.1:21" {
		t.Fatalf("ProbeTarget = %v, want 192.0.2.1:21", got)
	}
	c.SkipOutbound = mustPorts(t, "1-65535")
	if _, err := ProbeTarget(c, IPv6); err == nil {
		t.Fatal("ProbeTarget with every port skipped: want an error")
	}
}

func TestParseIPv6Mode(t *testing.T) {
	for in, want := range map[string]IPv6Mode{"": IPv6Auto, "AUTO": IPv6Auto, "true": IPv6On, "off": IPv6Off} {
		if got, err := ParseIPv6Mode(in); err != nil || got != want {
			t.Errorf("ParseIPv6Mode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseIPv6Mode("maybe"); err == nil {
		t.Error("ParseIPv6Mode(maybe): want an error")
	}
}
