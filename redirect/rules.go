// Package redirect holds Trellis's traffic-redirection rule set as data:
// the nat chains that send a pod's TCP to its proxy, rendered as
// iptables-restore input, applied with the iptables binaries and verified
// by listing them back. Both trellis-init (inside the pod) and trellis-cni
// (from the host, in the pod's netns) use it, so the two ways produce the
// same rules.
package redirect

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Chain names (docs/redirection.md, notes/k8s-contract.md).
const (
	OutputChain     = "TRELLIS_OUTPUT"
	PreroutingChain = "TRELLIS_PREROUTING"
)

// Defaults from the injection contract.
const (
	DefaultProxyUID     = 2102
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
)

// Family is an IP family; each has its own iptables binaries and loopback.
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// Iptables is the binary that lists and checks rules for the family.
func (f Family) Iptables() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// Restore is the family's iptables-restore binary.
func (f Family) Restore() string {
	if f == IPv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.0/8"
}

// Config is what the rules depend on.
type Config struct {
	ProxyUID     uint32
	InboundPort  uint16
	OutboundPort uint16
	// SkipInbound are destination ports of incoming connections that go
	// straight to the app; SkipOutbound are destination ports of outgoing
	// connections that bypass the proxy.
	SkipInbound  []PortRange
	SkipOutbound []PortRange
}

// Validate reports a configuration that would produce broken rules.
func (c Config) Validate() error {
	var errs []error
	if c.InboundPort == 0 {
		errs = append(errs, errors.New("inbound port must be 1-65535"))
	}
	if c.OutboundPort == 0 {
		errs = append(errs, errors.New("outbound port must be 1-65535"))
	}
	if c.InboundPort != 0 && c.InboundPort == c.OutboundPort {
		errs = append(errs, fmt.Errorf("inbound and outbound ports are both %d", c.InboundPort))
	}
	if c.ProxyUID == 0 {
		// Root's traffic would bypass the proxy, and so would the app's if
		// it ran as root: surely a mistake.
		errs = append(errs, errors.New("proxy uid must not be 0"))
	}
	return errors.Join(errs...)
}

// Chain is one of our nat chains: its rules, and the built-in chain that
// jumps to it. Rules are written exactly as `iptables -S` prints them so
// that verification is a plain comparison.
type Chain struct {
	Name   string
	Parent string
	Jump   string   // the rule in Parent, e.g. "-A OUTPUT -p tcp -j TRELLIS_OUTPUT"
	Rules  []string // "-A TRELLIS_OUTPUT ..." lines
}

// Chains returns the rule set for a family, PREROUTING (inbound) first.
func Chains(c Config, f Family) []Chain {
	ret := func(chain string) string { return "-A " + chain + " " }
	skip := func(chain string, rs []PortRange) []string {
		var out []string
		for _, r := range rs {
			out = append(out, ret(chain)+"-p tcp -m tcp --dport "+r.String()+" -j RETURN")
		}
		return out
	}

	in := Chain{Name: PreroutingChain, Parent: "PREROUTING"}
	in.Jump = "-A PREROUTING -p tcp -j " + PreroutingChain
	in.Rules = append(in.Rules, skip(PreroutingChain, c.SkipInbound)...)
	in.Rules = append(in.Rules, ret(PreroutingChain)+"-p tcp -j REDIRECT --to-ports "+strconv.Itoa(int(c.InboundPort)))

	out := Chain{Name: OutputChain, Parent: "OUTPUT"}
	out.Jump = "-A OUTPUT -p tcp -j " + OutputChain
	out.Rules = []string{
		// The proxy's own connections must leave: otherwise they would loop
		// back into it.
		ret(OutputChain) + "-m owner --uid-owner " + strconv.FormatUint(uint64(c.ProxyUID), 10) + " -j RETURN",
		ret(OutputChain) + "-o lo -j RETURN",
		ret(OutputChain) + "-d " + f.loopback() + " -j RETURN",
	}
	out.Rules = append(out.Rules, skip(OutputChain, c.SkipOutbound)...)
	out.Rules = append(out.Rules, ret(OutputChain)+"-p tcp -j REDIRECT --to-ports "+strconv.Itoa(int(c.OutboundPort)))
	return []Chain{in, out}
}

// Render returns iptables-restore input (for `--noflush`) that recreates our
// chains and leaves exactly one jump to each. present maps a parent chain
// name to how many jumps to our chain it holds now; a nil map means a fresh
// namespace. Declaring a chain under --noflush flushes it, so only our
// chains are rewritten; rules in other chains are never listed here.
func Render(c Config, f Family, present map[string]int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# trellis redirection rules (%s), for %s --noflush\n", f, f.Restore())
	b.WriteString("*nat\n")
	chains := Chains(c, f)
	for _, ch := range chains {
		fmt.Fprintf(&b, ":%s - [0:0]\n", ch.Name)
	}
	for _, ch := range chains {
		for _, r := range ch.Rules {
			b.WriteString(r)
			b.WriteByte('\n')
		}
	}
	for _, ch := range chains {
		n := present[ch.Parent]
		switch {
		case n == 0:
			b.WriteString(ch.Jump)
			b.WriteByte('\n')
		case n > 1:
			del := "-D" + strings.TrimPrefix(ch.Jump, "-A")
			for range n - 1 {
				b.WriteString(del)
				b.WriteByte('\n')
			}
		}
	}
	b.WriteString("COMMIT\n")
	return b.String()
}
