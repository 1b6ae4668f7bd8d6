package balance

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Config is how a Balancer ejects failing endpoints and ramps new ones.
// The zero value turns both off; DefaultConfig is what a Service without
// annotations gets.
type Config struct {
	Accrual   Accrual
	SlowStart SlowStart
}

// Accrual decides when an endpoint has failed enough to be ejected. A zero
// Consecutive or Ratio turns that criterion off.
type Accrual struct {
	Consecutive int           // consecutive failures that eject
	Ratio       float64       // failure ratio above which...
	MinRequests int           // ...over at least this many requests...
	Window      time.Duration // ...in this sliding window, ejects
}

// Off reports whether no criterion is set.
func (a Accrual) Off() bool { return a.Consecutive <= 0 && a.Ratio <= 0 }

// SlowStart ramps a new endpoint's weight from MinWeight to 1 over Window,
// as (age/Window)^(1/Aggression). Window 0 turns it off.
type SlowStart struct {
	Window     time.Duration
	Aggression float64
	MinWeight  float64
}

// Defaults (docs/traffic.md).
const (
	DefaultConsecutive = 7
	DefaultRatio       = 0.5
	DefaultMinRequests = 20
	DefaultRateWindow  = 10 * time.Second
	DefaultSlowStart   = 30 * time.Second
	defaultMinWeight   = 0.1
)

// DefaultConfig is the configuration of a Service without annotations.
func DefaultConfig() Config {
	return Config{
		Accrual: Accrual{
			Consecutive: DefaultConsecutive,
			Ratio:       DefaultRatio, MinRequests: DefaultMinRequests, Window: DefaultRateWindow,
		},
		SlowStart: SlowStart{Window: DefaultSlowStart, Aggression: 1, MinWeight: defaultMinWeight},
	}
}

// Bounds on annotation values: anything outside is refused, not clamped,
// so a typo is reported rather than silently changed.
const (
	maxAnnotation  = 256
	maxConsecutive = 1000
	maxMinRequests = 100000
	maxRateWindow  = 10 * time.Minute
	maxSlowStart   = 10 * time.Minute
)

// ParseFailureAccrual parses balancer.trellis.io/failure-accrual: "" (the
// defaults), "off", or a comma-separated list of "consecutive:N" and
// "rate:RATIO/MIN_REQUESTS/WINDOW" (e.g. "rate:0.5/20/10s"); criteria
// not listed are off.
func ParseFailureAccrual(s string) (Accrual, error) {
	s = strings.TrimSpace(s)
	switch {
	case len(s) > maxAnnotation:
		return Accrual{}, fmt.Errorf("failure accrual: longer than %d bytes", maxAnnotation)
	case s == "":
		return DefaultConfig().Accrual, nil
	case s == "off":
		return Accrual{}, nil
	}
	var a Accrual
	for item := range strings.SplitSeq(s, ",") {
		kind, val, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok {
			return Accrual{}, fmt.Errorf("failure accrual %q: want consecutive:N or rate:RATIO/MIN/WINDOW", item)
		}
		var err error
		switch kind {
		case "consecutive":
			a.Consecutive, err = parseInt(val, 1, maxConsecutive)
		case "rate":
			err = a.parseRate(val)
		default:
			err = fmt.Errorf("unknown criterion %q", kind)
		}
		if err != nil {
			return Accrual{}, fmt.Errorf("failure accrual %q: %w", item, err)
		}
	}
	return a, nil
}

func (a *Accrual) parseRate(val string) error {
	parts := strings.Split(val, "/")
	if len(parts) != 3 {
		return errors.New("want RATIO/MIN_REQUESTS/WINDOW")
	}
	r, err := strconv.ParseFloat(parts[0], 64)
	if err != nil || !(r > 0 && r <= 1) {
		return fmt.Errorf("ratio %q: want a number in (0, 1]", parts[0])
	}
	n, err := parseInt(parts[1], 1, maxMinRequests)
	if err != nil {
		return err
	}
	w, err := time.ParseDuration(parts[2])
	if err != nil || w < time.Second || w > maxRateWindow {
		return fmt.Errorf("window %q: want a duration from 1s to %s", parts[2], maxRateWindow)
	}
	a.Ratio, a.MinRequests, a.Window = r, n, w
	return nil
}

func parseInt(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%q: want an integer from %d to %d", s, lo, hi)
	}
	return n, nil
}

// ParseSlowStart parses balancer.trellis.io/slow-start: "" (the default
// window), "0" or "off" (no ramp), or a duration up to 10m.
func ParseSlowStart(s string) (SlowStart, error) {
	ss := DefaultConfig().SlowStart
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return ss, nil
	case "0", "off":
		ss.Window = 0
		return ss, nil
	}
	if len(s) > maxAnnotation {
		return SlowStart{}, fmt.Errorf("slow start: longer than %d bytes", maxAnnotation)
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > maxSlowStart {
		return SlowStart{}, fmt.Errorf("slow start %q: want a duration from 0 to %s", s, maxSlowStart)
	}
	ss.Window = d
	return ss, nil
}

// FailedStatus reports whether a response counts against its endpoint
// (latency penalty and failure accrual): an HTTP 5xx, or a gRPC
// UNAVAILABLE (14) or INTERNAL (13) known with the response headers (a
// trailers-only answer, as servers and proxies give when they fail before
// any message). Other gRPC codes are the application's answers, and
// DEADLINE_EXCEEDED is the caller's deadline, not the endpoint's health.
func FailedStatus(httpStatus int, grpcStatus string) bool {
	return httpStatus >= 500 || grpcStatus == "14" || grpcStatus == "13"
}
