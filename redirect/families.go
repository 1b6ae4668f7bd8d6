package redirect

import (
	"context"
	"fmt"
	"strings"
)

// IPv6Mode says whether to program ip6tables too.
type IPv6Mode string

const (
	IPv6Auto IPv6Mode = "auto" // when ip6tables' nat table works here
	IPv6On   IPv6Mode = "true" // required: fail if it does not work
	IPv6Off  IPv6Mode = "false"
)

// ParseIPv6Mode accepts auto, true/on/yes and false/off/no.
func ParseIPv6Mode(s string) (IPv6Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "auto":
		return IPv6Auto, nil
	case "true", "on", "yes", "1":
		return IPv6On, nil
	case "false", "off", "no", "0":
		return IPv6Off, nil
	}
	return "", fmt.Errorf("ipv6 mode %q: want auto, true or false", s)
}

// Families resolves the families to program. note explains a skipped IPv6
// in auto mode, for the caller to print.
func Families(ctx context.Context, r Runner, mode IPv6Mode) (fams []Family, note string, err error) {
	fams = []Family{IPv4}
	switch mode {
	case IPv6Off:
		return fams, "ipv6: off", nil
	case IPv6On:
		if err := FamilyAvailable(ctx, r, IPv6); err != nil {
			return nil, "", fmt.Errorf("ipv6 required but its nat table is unavailable: %w", err)
		}
		return append(fams, IPv6), "", nil
	default:
		if err := FamilyAvailable(ctx, r, IPv6); err != nil {
			return fams, fmt.Sprintf("ipv6: skipped, nat table unavailable (%v)", err), nil
		}
		return append(fams, IPv6), "", nil
	}
}
