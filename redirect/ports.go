package redirect

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxPortItems bounds a port list so a hostile annotation cannot make us
// render an enormous rule set.
const maxPortItems = 256

// PortRange is an inclusive range of TCP ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

// String renders the range the way iptables prints a --dport match.
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d:%d", r.Lo, r.Hi)
}

// Contains reports whether p is in the range.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// ParsePorts parses a comma-separated list of ports and ranges ("4143,
// 4191, 8000-8100"; "8000:8100" is accepted too). Empty items are ignored
// so "" and trailing commas are fine. The result is sorted with overlapping
// and adjacent ranges merged, so equal sets always render the same rules.
func ParsePorts(s string) ([]PortRange, error) {
	var out []PortRange
	items := strings.Split(s, ",")
	if len(items) > maxPortItems {
		return nil, fmt.Errorf("port list has %d items, at most %d allowed", len(items), maxPortItems)
	}
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(item, "-")
		if !isRange {
			lo, hi, isRange = strings.Cut(item, ":")
		}
		if !isRange {
			hi = lo
		}
		l, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port list item %q: %w", item, err)
		}
		h, err := parsePort(hi)
		if err != nil {
			return nil, fmt.Errorf("port list item %q: %w", item, err)
		}
		if l > h {
			return nil, fmt.Errorf("port list item %q: range start is after its end", item)
		}
		out = append(out, PortRange{Lo: l, Hi: h})
	}
	return mergeRanges(out), nil
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	// Only plain decimal digits: Atoi would accept "+80".
	if s == "" || strings.TrimLeft(s, "0123456789") != "" || len(s) > 5 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%q is not a port number (1-65535)", s)
	}
	return uint16(n), nil
}

func mergeRanges(rs []PortRange) []PortRange {
	if len(rs) == 0 {
		return nil
	}
	slices.SortFunc(rs, func(a, b PortRange) int {
		if a.Lo != b.Lo {
			return int(a.Lo) - int(b.Lo)
		}
		return int(a.Hi) - int(b.Hi)
	})
	out := []PortRange{rs[0]}
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if uint32(r.Lo) <= uint32(last.Hi)+1 {
			last.Hi = max(last.Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// FormatPorts is the inverse of ParsePorts (ranges written with "-").
func FormatPorts(rs []PortRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strings.ReplaceAll(r.String(), ":", "-")
	}
	return strings.Join(parts, ",")
}

// MergePorts returns the union of port lists, sorted and merged.
func MergePorts(lists ...[]PortRange) []PortRange {
	var all []PortRange
	for _, l := range lists {
		all = append(all, l...)
	}
	return mergeRanges(all)
}
