package routemodel

import (
	"testing"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestDuration(t *testing.T) {
	d := func(s string) *gwv1.Duration { v := gwv1.Duration(s); return &v }
	cases := []struct {
		in    *gwv1.Duration
		unset bool
		want  time.Duration
	}{
		{in: nil, unset: true},
		{in: d("0s"), want: 0}, // "no timeout": sent, so --request-timeout does not apply
		{in: d("10s"), want: 10 * time.Second},
		{in: d("1h30m"), want: 90 * time.Minute},
		{in: d("250ms"), want: 250 * time.Millisecond},
		{in: d("-1s"), unset: true},
		{in: d("soon"), unset: true},
	}
	for _, tc := range cases {
		got := duration(tc.in)
		if tc.unset {
			if got != nil {
				t.Errorf("duration(%v) = %v, want unset", tc.in, got.AsDuration())
			}
			continue
		}
		if got == nil || got.AsDuration() != tc.want {
			t.Errorf("duration(%s) = %v, want %v", *tc.in, got, tc.want)
		}
	}
}
