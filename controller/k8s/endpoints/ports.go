package endpoints

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxPortSetLen bounds the annotation a parser reads; a real list is short.
const maxPortSetLen = 4096

// PortSet is a set of TCP ports as written in an annotation:
// "3306,5432,8000-8100". The zero value is empty.
type PortSet struct {
	ranges [][2]uint32
}

// ParsePortSet parses a comma-separated list of ports and inclusive
// ranges. Blank entries are ignored. On a bad entry it returns the set of
// the good entries and an error naming every bad one, so one typo does not
// switch off the rest of the list.
func ParsePortSet(s string) (PortSet, error) {
	var ps PortSet
	if len(s) > maxPortSetLen {
		return ps, fmt.Errorf("port list is %d bytes, more than %d", len(s), maxPortSetLen)
	}
	var errs []error
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := parsePort(strings.TrimSpace(lo))
		b := a
		if err == nil && isRange {
			b, err = parsePort(strings.TrimSpace(hi))
			if err == nil && b < a {
				err = fmt.Errorf("range %q ends before it starts", f)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%q: %w", f, err))
			continue
		}
		ps.ranges = append(ps.ranges, [2]uint32{a, b})
	}
	return ps, errors.Join(errs...)
}

func parsePort(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || s[0] == '+' {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint32(n), nil
}

// Contains reports whether port is in the set.
func (ps PortSet) Contains(port uint32) bool {
	for _, r := range ps.ranges {
		if port >= r[0] && port <= r[1] {
			return true
		}
	}
	return false
}
