package balance

import (
	"strings"
	"testing"
	"time"
)

func TestParseFailureAccrual(t *testing.T) {
	def := DefaultConfig().Accrual
	for _, tc := range []struct {
		in      string
		want    Accrual
		wantErr bool
	}{
		{"", def, false},
		{"off", Accrual{}, false},
		{"consecutive:7", Accrual{Consecutive: 7}, false},
		{"rate:0.5/20/10s", Accrual{Ratio: 0.5, MinRequests: 20, Window: 10 * time.Second}, false},
		{" consecutive:3, rate:1/5/1m ", Accrual{Consecutive: 3, Ratio: 1, MinRequests: 5, Window: time.Minute}, false},
		{"consecutive:0", Accrual{}, true},
		{"consecutive:1001", Accrual{}, true},
		{"consecutive:x", Accrual{}, true},
		{"rate:0/20/10s", Accrual{}, true},
		{"rate:1.5/20/10s", Accrual{}, true},
		{"rate:NaN/20/10s", Accrual{}, true},
		{"rate:0.5/0/10s", Accrual{}, true},
		{"rate:0.5/20/100ms", Accrual{}, true},
		{"rate:0.5/20/11m", Accrual{}, true},
		{"rate:0.5/20", Accrual{}, true},
		{"ratio:0.5", Accrual{}, true},
		{"consecutive", Accrual{}, true},
		{"off,consecutive:3", Accrual{}, true},
		{strings.Repeat("consecutive:1,", 30), Accrual{}, true},
	} {
		got, err := ParseFailureAccrual(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseFailureAccrual(%q) = %+v, %v; want %+v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseSlowStart(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"", DefaultSlowStart, false},
		{"0", 0, false},
		{"off", 0, false},
		{"45s", 45 * time.Second, false},
		{"0s", 0, false},
		{"-1s", 0, true},
		{"11m", 0, true},
		{"soon", 0, true},
	} {
		got, err := ParseSlowStart(tc.in)
		if (err != nil) != tc.wantErr || (err == nil && got.Window != tc.want) {
			t.Errorf("ParseSlowStart(%q) = %+v, %v; want window %s, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
		if err == nil && (got.Aggression != 1 || got.MinWeight != defaultMinWeight) {
			t.Errorf("ParseSlowStart(%q) = %+v: ramp shape not the default", tc.in, got)
		}
	}
}

// FuzzParseAnnotations: any annotation parses or is refused, never panics,
// and what parses is within the documented bounds.
func FuzzParseAnnotations(f *testing.F) {
	for _, s := range []string{"", "off", "consecutive:7", "rate:0.5/20/10s", "consecutive:3,rate:1/5/1m", "30s", "0", "rate:1e-300/1/1s", "rate:0.5/20/-1s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a, err := ParseFailureAccrual(s); err == nil {
			if a.Consecutive < 0 || a.Consecutive > maxConsecutive || a.Ratio < 0 || a.Ratio > 1 ||
				a.MinRequests < 0 || a.MinRequests > maxMinRequests || a.Window < 0 || a.Window > maxRateWindow ||
				(a.Ratio > 0 && (a.MinRequests < 1 || a.Window < time.Second)) {
				t.Fatalf("ParseFailureAccrual(%q) = %+v: out of bounds", s, a)
			}
		}
		if ss, err := ParseSlowStart(s); err == nil && (ss.Window < 0 || ss.Window > maxSlowStart) {
			t.Fatalf("ParseSlowStart(%q) = %+v: out of bounds", s, ss)
		}
	})
}

func TestFailedStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		grpc   string
		want   bool
	}{
		{200, "", false}, {404, "", false}, {429, "", false}, {499, "", false},
		{500, "", true}, {502, "", true}, {503, "", true}, {504, "", true},
		{200, "0", false}, {200, "5", false}, {200, "4", false}, {200, "8", false},
		{200, "13", true}, {200, "14", true},
	} {
		if got := FailedStatus(tc.status, tc.grpc); got != tc.want {
			t.Errorf("FailedStatus(%d, %q) = %v, want %v", tc.status, tc.grpc, got, tc.want)
		}
	}
}
