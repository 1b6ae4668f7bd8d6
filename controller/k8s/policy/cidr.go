package policy

import (
	"fmt"
	"net/netip"

	policyv1 "github.com/trellis-mesh/trellis/api/policy/v1alpha1"
)

// maxPrefixes bounds what one network with exceptions may expand to: each
// exception can split a prefix into up to 128 pieces, and every piece is
// sent to every proxy of the Server.
const maxPrefixes = 1024

// subtract returns the CIDRs covering a network without its exceptions.
// An exception of the other address family, or outside the network,
// removes nothing.
func subtract(n policyv1.Network) ([]string, error) {
	base, err := netip.ParsePrefix(n.CIDR)
	if err != nil {
		return nil, fmt.Errorf("cidr %q: %w", n.CIDR, err)
	}
	set := []netip.Prefix{base.Masked()}
	for _, e := range n.Except {
		ex, err := netip.ParsePrefix(string(e))
		if err != nil {
			return nil, fmt.Errorf("except %q: %w", e, err)
		}
		var next []netip.Prefix
		for _, p := range set {
			next = cut(next, p, ex.Masked())
		}
		if len(next) > maxPrefixes {
			return nil, fmt.Errorf("cidr %s less its exceptions is more than %d prefixes", n.CIDR, maxPrefixes)
		}
		set = next
	}
	out := make([]string, len(set))
	for i, p := range set {
		out[i] = p.String()
	}
	return out, nil
}

// cut appends p without ex to out.
func cut(out []netip.Prefix, p, ex netip.Prefix) []netip.Prefix {
	switch {
	case !p.Overlaps(ex):
		return append(out, p)
	case ex.Bits() <= p.Bits(): // ex covers p
		return out
	}
	lo, hi := halves(p)
	return cut(cut(out, lo, ex), hi, ex)
}

// halves splits a prefix into its two prefixes one bit longer.
func halves(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	bits := p.Bits()
	a := p.Addr().AsSlice()
	a[bits/8] |= 0x80 >> (bits % 8)
	hi, _ := netip.AddrFromSlice(a)
	return netip.PrefixFrom(p.Addr(), bits+1), netip.PrefixFrom(hi, bits+1)
}
