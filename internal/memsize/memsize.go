// Package memsize parses memory sizes as GOMEMLIMIT writes them: a plain
// number of bytes, or one with a B, KiB, MiB or GiB suffix.
package memsize

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse returns the size s names in bytes; "" is 0. Sizes above 2^62
// bytes are refused, so no multiplication overflows.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. 12MiB)", s)
	}
	return n * mult, nil
}

// CgroupFiles hold the container's memory limit (cgroup v2, then v1).
var CgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// noLimit: cgroup v1 reports "unlimited" as a page-rounded maximum int64.
const noLimit = 1 << 62

// CgroupLimit returns the container's memory limit read with readFile
// (os.ReadFile) and the file it came from; 0 when there is none ("max",
// unlimited, or no cgroup file).
func CgroupLimit(readFile func(string) ([]byte, error)) (int64, string) {
	for _, f := range CgroupFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= noLimit {
			return 0, ""
		}
		return n, f
	}
	return 0, ""
}
