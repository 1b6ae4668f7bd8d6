package redirect

import (
	"slices"
	"strings"
	"testing"
)

func TestParsePorts(t *testing.T) {
	tests := []struct {
		in      string
		want    string // FormatPorts of the result
		wantErr string
	}{
		{in: "", want: ""},
		{in: " , ,", want: ""},
		{in: "4143", want: "4143"},
		{in: "4191,4143", want: "4143,4191"},
		{in: "4143, 4191,", want: "4143,4191"},
		{in: "8000-8100", want: "8000-8100"},
		{in: "8000:8100", want: "8000-8100"},
		{in: "8050,8000-8100,7999", want: "7999-8100"},
		{in: "1-3,4-6", want: "1-6"},
		{in: "5,5,5", want: "5"},
		{in: "65535", want: "65535"},
		{in: "0", wantErr: "not a port"},
		{in: "65536", wantErr: "not a port"},
		{in: "+80", wantErr: "not a port"},
		{in: "http", wantErr: "not a port"},
		{in: "9-8", wantErr: "start is after its end"},
		{in: "1-", wantErr: "not a port"},
		{in: "1-2-3", wantErr: "not a port"},
		{in: strings.Repeat("1,", 300), wantErr: "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParsePorts(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParsePorts(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePorts(%q): %v", tt.in, err)
			}
			if s := FormatPorts(got); s != tt.want {
				t.Fatalf("ParsePorts(%q) = %s, want %s", tt.in, s, tt.want)
			}
		})
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, s := range []string{"", "4143,4191", "8000-8100", "1:65535", "0", "9-8", "a,b", " 22 , 25-26,", "65536", "1-2-3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParsePorts(s)
		if err != nil {
			return
		}
		// Sorted, disjoint, non-adjacent, valid ranges.
		for i, r := range rs {
			if r.Lo == 0 || r.Lo > r.Hi {
				t.Fatalf("ParsePorts(%q): bad range %v", s, r)
			}
			if i > 0 && uint32(rs[i-1].Hi)+1 >= uint32(r.Lo) {
				t.Fatalf("ParsePorts(%q): ranges not merged: %v", s, rs)
			}
		}
		// Formatting and parsing again is the identity.
		again, err := ParsePorts(FormatPorts(rs))
		if err != nil || !slices.Equal(again, rs) {
			t.Fatalf("round trip of %q: %v, %v; want %v", s, again, err, rs)
		}
	})
}
