package forward

import (
	"net/http"
	"strings"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{"connection tokens", http.Header{"Connection": {"X-A, close", "x-b"}, "X-A": {"1"}, "X-B": {"2"}, "X-C": {"3"}}, http.Header{"X-C": {"3"}}},
		{"fixed list", http.Header{"Keep-Alive": {"5"}, "Proxy-Connection": {"k"}, "Transfer-Encoding": {"chunked"}, "Upgrade": {"ws"}, "Host-Like": {"h"}}, http.Header{"Host-Like": {"h"}}},
		{"te trailers kept", http.Header{"Te": {"trailers"}}, http.Header{"Te": {"trailers"}}},
		{"te other removed", http.Header{"Te": {"gzip, trailers"}}, http.Header{}},
		{"empty tokens", http.Header{"Connection": {" , ,"}}, http.Header{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			RemoveHopByHop(tt.in)
			if len(tt.in) != len(tt.want) {
				t.Fatalf("got %v, want %v", tt.in, tt.want)
			}
			for k, v := range tt.want {
				if strings.Join(tt.in[k], ",") != strings.Join(v, ",") {
					t.Fatalf("got %v, want %v", tt.in, tt.want)
				}
			}
		})
	}
}

func TestStripMesh(t *testing.T) {
	h := http.Header{"Trellis-Orig-Proto": {"HTTP/1.1"}, "trellis-target-port": {"1"}, "Trellis-X": {"y"}, "X-Trellis": {"kept"}}
	StripMesh(h)
	if len(h) != 1 || h.Get("X-Trellis") != "kept" {
		t.Fatalf("got %v", h)
	}
}

func TestParseTargetPort(t *testing.T) {
	tests := []struct {
		in   string
		want uint16
		ok   bool
	}{
		{"80", 80, true}, {"65535", 65535, true}, {"1", 1, true},
		{"0", 0, false}, {"65536", 0, false}, {"", 0, false}, {"-1", 0, false}, {"+80", 0, false},
		{" 80", 0, false}, {"123456", 0, false}, {"8a", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseTargetPort(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTargetPort(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestIsUpgrade(t *testing.T) {
	if !IsUpgrade(http.Header{"Connection": {"keep-alive, Upgrade"}, "Upgrade": {"websocket"}}) {
		t.Error("websocket upgrade not detected")
	}
	if IsUpgrade(http.Header{"Upgrade": {"websocket"}}) || IsUpgrade(http.Header{"Connection": {"upgrade"}}) {
		t.Error("partial upgrade detected")
	}
}

func FuzzParseTargetPort(f *testing.F) {
	for _, s := range []string{"80", "0", "65535", "65536", "", "-1", "99999", "1a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseTargetPort(s)
		if err != nil {
			if p != 0 {
				t.Fatalf("error with port %d", p)
			}
			return
		}
		if p == 0 || strings.TrimLeft(s, "0") != strings.TrimLeft(itoa(p), "0") {
			t.Fatalf("ParseTargetPort(%q) = %d", s, p)
		}
	})
}

func itoa(p uint16) string {
	b := []byte{}
	for p > 0 {
		b = append([]byte{byte('0' + p%10)}, b...)
		p /= 10
	}
	return string(b)
}

func FuzzSanitizeHeaders(f *testing.F) {
	f.Add("X-A, close", "Te", "trailers, gzip", "Trellis-Target-Port")
	f.Add(",,,", "Connection", "upgrade", "trellis-")
	f.Fuzz(func(t *testing.T, conn, k, v, mesh string) {
		h := http.Header{"Connection": {conn}, http.CanonicalHeaderKey(k): {v}, mesh: {"x"}, "Upgrade": {"u"}}
		_ = IsUpgrade(h)
		RemoveHopByHop(h)
		StripMesh(h)
		for key := range h {
			switch http.CanonicalHeaderKey(key) {
			case "Connection", "Upgrade", "Keep-Alive", "Transfer-Encoding", "Proxy-Connection":
				t.Fatalf("hop-by-hop header %q survived: %v", key, h)
			}
			if len(key) >= 8 && strings.EqualFold(key[:8], "trellis-") {
				t.Fatalf("mesh header %q survived", key)
			}
		}
		if te, ok := h["Te"]; ok && !(len(te) == 1 && strings.TrimSpace(strings.ToLower(te[0])) == "trailers") {
			t.Fatalf("TE %q survived", te)
		}
	})
}
