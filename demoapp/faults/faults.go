// Package faults injects failures into the demo application so that the
// mesh's success-rate metrics have something to show.
package faults

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Injector decides, per request, whether to fail it on purpose.
// The zero value never fails.
type Injector struct {
	rate float64
	// roll returns a number in [0, 1); replaceable in tests of pure logic.
	roll func() float64
}

// New returns an Injector failing the given share (0.0..1.0) of requests.
func New(rate float64) (*Injector, error) {
	if math.IsNaN(rate) || rate < 0 || rate > 1 {
		return nil, fmt.Errorf("fail rate %v: must be between 0.0 and 1.0", rate)
	}
	return &Injector{rate: rate, roll: rand.Float64}, nil
}

// Rate is the configured share of failed requests.
func (i *Injector) Rate() float64 {
	if i == nil {
		return 0
	}
	return i.rate
}

// Fail reports whether this request should be failed.
func (i *Injector) Fail() bool {
	if i == nil || i.rate <= 0 {
		return false
	}
	if i.rate >= 1 {
		return true
	}
	return i.roll() < i.rate
}
