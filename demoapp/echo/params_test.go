package echo

import (
	"errors"
	"testing"
)

func TestParseStatus(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr bool
	}{
		{"200", 200, false}, {"418", 418, false}, {"599", 599, false},
		{"199", 0, true}, {"600", 0, true}, {"20", 0, true}, {"2000", 0, true}, {"+20", 0, true}, {"", 0, true}, {"2a0", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseStatus(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseStatus(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseStreamAndSlow(t *testing.T) {
	tests := []struct {
		query   string
		want    StreamParams
		wantMS  int
		wantErr bool
	}{
		{"", StreamParams{Chunks: 10}, 100, false},
		{"chunks=3&ms=7", StreamParams{Chunks: 3, MS: 7}, 7, false},
		{"ms=0", StreamParams{Chunks: 10}, 0, false},
		{"chunks=-1", StreamParams{}, 100, true},
		{"ms=abc", StreamParams{}, 0, true},
		{"ms=1e3", StreamParams{}, 0, true},
		{"ms=%zz", StreamParams{}, 0, true},
		{"ms=99999999999999", StreamParams{}, 0, true},
	}
	for _, tt := range tests {
		got, err := ParseStream(tt.query)
		if (err != nil) != tt.wantErr || (err == nil && got != tt.want) {
			t.Errorf("ParseStream(%q) = %+v, %v; want %+v, error %v", tt.query, got, err, tt.want, tt.wantErr)
		}
		ms, err := ParseSlow(tt.query)
		if tt.query == "chunks=-1" { // ParseSlow ignores chunks
			if err != nil || ms != 100 {
				t.Errorf("ParseSlow(%q) = %d, %v", tt.query, ms, err)
			}
			continue
		}
		if (err != nil) != tt.wantErr || (err == nil && ms != tt.wantMS) {
			t.Errorf("ParseSlow(%q) = %d, %v; want %d, error %v", tt.query, ms, err, tt.wantMS, tt.wantErr)
		}
	}
}

func FuzzParseStatus(f *testing.F) {
	for _, s := range []string{"200", "418", "599", "600", "99", "", "abc", "\x00\x00\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		code, err := ParseStatus(s)
		if err != nil {
			if !errors.Is(err, ErrBadParam) {
				t.Fatalf("error %v does not wrap ErrBadParam", err)
			}
			return
		}
		if code < 200 || code > 599 {
			t.Fatalf("ParseStatus(%q) = %d", s, code)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "chunks=3&ms=7", "ms=5", "ms=-1", "chunks=%zz", "ms=1&ms=2", "chunks=99999999999999999", ";;&&=="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		p, err := ParseStream(q)
		if err != nil && !errors.Is(err, ErrBadParam) {
			t.Fatalf("ParseStream error %v does not wrap ErrBadParam", err)
		}
		if err == nil && (p.Chunks < 0 || p.Chunks > MaxStreamChunks || p.MS < 0 || p.MS > MaxStreamMS) {
			t.Fatalf("ParseStream(%q) = %+v, out of bounds", q, p)
		}
		ms, err := ParseSlow(q)
		if err != nil && !errors.Is(err, ErrBadParam) {
			t.Fatalf("ParseSlow error %v does not wrap ErrBadParam", err)
		}
		if err == nil && (ms < 0 || ms > MaxSlowMS) {
			t.Fatalf("ParseSlow(%q) = %d, out of bounds", q, ms)
		}
	})
}
