package forward

import (
	"net"
	"strconv"
	"testing"
)

func TestPortOf(t *testing.T) {
	for addr, want := range map[string]uint16{
		"127.0.0.1:8080": 8080, "[::1]:443": 443, "host:65535": 65535,
		"host:65536": 0, "host": 0, "": 0, "host:": 0, "host:-1": 0, "[::1]": 0, "a:b:80": 80,
	} {
		if got := PortOf(addr); got != want {
			t.Errorf("PortOf(%q) = %d, want %d", addr, got, want)
		}
	}
}

// FuzzPortOf: PortOf never panics, and agrees with net.SplitHostPort on
// every address that parses there.
func FuzzPortOf(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8080", "[::1]:443", "x", ":", "h:99999", "h:+80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		got := PortOf(addr)
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			return
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			n = 0
		}
		if uint16(n) != got {
			t.Fatalf("PortOf(%q) = %d, SplitHostPort says %q", addr, got, port)
		}
	})
}
