package faults

import (
	"math"
	"testing"
)

func TestNewValidates(t *testing.T) {
	tests := []struct {
		rate    float64
		wantErr bool
	}{
		{0, false}, {0.5, false}, {1, false},
		{-0.1, true}, {1.01, true}, {math.NaN(), true}, {math.Inf(1), true},
	}
	for _, tt := range tests {
		_, err := New(tt.rate)
		if (err != nil) != tt.wantErr {
			t.Errorf("New(%v) error = %v, want error %v", tt.rate, err, tt.wantErr)
		}
	}
}

func TestFail(t *testing.T) {
	tests := []struct {
		name string
		rate float64
		roll float64
		want bool
	}{
		{"zero never fails", 0, 0, false},
		{"one always fails", 1, 0.999, true},
		{"below rate fails", 0.3, 0.29, true},
		{"at rate passes", 0.3, 0.3, false},
		{"above rate passes", 0.3, 0.9, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, err := New(tt.rate)
			if err != nil {
				t.Fatal(err)
			}
			inj.roll = func() float64 { return tt.roll }
			if got := inj.Fail(); got != tt.want {
				t.Errorf("Fail() = %v, want %v", got, tt.want)
			}
		})
	}
	var nilInj *Injector
	if nilInj.Fail() || nilInj.Rate() != 0 {
		t.Error("nil Injector must never fail")
	}
}
