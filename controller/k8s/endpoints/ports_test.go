package endpoints

import (
	"strings"
	"testing"
)

func TestParsePortSet(t *testing.T) {
	tests := []struct {
		in         string
		has, lacks []uint32
		wantErr    string
	}{
		{in: "", lacks: []uint32{1, 3306}},
		{in: "3306", has: []uint32{3306}, lacks: []uint32{3305, 3307}},
		{in: " 3306 , 5432,", has: []uint32{3306, 5432}, lacks: []uint32{80}},
		{in: "8000-8002", has: []uint32{8000, 8001, 8002}, lacks: []uint32{7999, 8003}},
		{in: "1-65535", has: []uint32{1, 65535}},
		{in: "mysql,3306", has: []uint32{3306}, wantErr: `"mysql"`},
		{in: "0", lacks: []uint32{0}, wantErr: "not a port"},
		{in: "65536", wantErr: "not a port"},
		{in: "+80", lacks: []uint32{80}, wantErr: "not a port"},
		{in: "90-80,25", has: []uint32{25}, lacks: []uint32{85}, wantErr: "ends before it starts"},
		{in: "80-", wantErr: "not a port"},
		{in: strings.Repeat("1,", 3000), wantErr: "more than"},
	}
	for _, tt := range tests {
		ps, err := ParsePortSet(tt.in)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ParsePortSet(%.20q) error %v, want %q", tt.in, err, tt.wantErr)
		}
		for _, p := range tt.has {
			if !ps.Contains(p) {
				t.Errorf("ParsePortSet(%.20q) lacks %d", tt.in, p)
			}
		}
		for _, p := range tt.lacks {
			if ps.Contains(p) {
				t.Errorf("ParsePortSet(%.20q) contains %d", tt.in, p)
			}
		}
	}
}

func FuzzParsePortSet(f *testing.F) {
	for _, s := range []string{"", "3306", "1-65535", "a,b,-", "80-70", ",,,", "4222, 6379 ,11211-11300"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePortSet(s)
		for _, r := range ps.ranges {
			if r[0] == 0 || r[0] > r[1] || r[1] > 65535 {
				t.Fatalf("bad range %v from %q", r, s)
			}
		}
		if err == nil && len(s) <= maxPortSetLen {
			// Every entry parsed: the set holds each written port.
			for _, f := range strings.Split(s, ",") {
				lo, _, _ := strings.Cut(strings.TrimSpace(f), "-")
				if p, perr := parsePort(strings.TrimSpace(lo)); perr == nil && !ps.Contains(p) {
					t.Fatalf("%q parsed without error but lacks %d", s, p)
				}
			}
		}
	})
}
