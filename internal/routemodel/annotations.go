package routemodel

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	apiv1 "github.com/trellis-mesh/trellis/api/v1"
)

// Annotations of a route: retries where the Gateway API's retry field is
// absent (GRPCRoute, a standard-channel HTTPRoute) or says less, and fault
// injection, which the Gateway API does not have. Every rule of the route
// gets them (docs/traffic.md).
const (
	AnnotationRetryLimit        = "retry.trellis.io/limit"         // retries after the first attempt
	AnnotationRetryHTTPStatuses = "retry.trellis.io/http-statuses" // "502,503" or "500-504"
	AnnotationRetryGRPCCodes    = "retry.trellis.io/grpc-codes"    // "unavailable,14"
	AnnotationRetryTimeout      = "retry.trellis.io/timeout"       // per attempt
	AnnotationRetryBackoff      = "retry.trellis.io/backoff"       // base of the exponential backoff
	AnnotationRetryBackoffMax   = "retry.trellis.io/backoff-max"
	AnnotationRetryBudget       = "retry.trellis.io/budget-percent" // extra load, % of requests
	AnnotationRetryBudgetMin    = "retry.trellis.io/budget-min-per-second"

	AnnotationAbortPercent    = "fault.trellis.io/abort-percent" // "0.5" = 0.5 %
	AnnotationAbortStatus     = "fault.trellis.io/abort-status"  // HTTP status, default 500
	AnnotationAbortGRPCStatus = "fault.trellis.io/abort-grpc-status"
	AnnotationDelayPercent    = "fault.trellis.io/delay-percent"
	AnnotationDelay           = "fault.trellis.io/delay" // "250ms"
)

// Bounds of annotation values: every byte is the route author's, and an
// answer goes to every caller.
const (
	maxAnnotation = 1024
	maxRetries    = 10
	maxStatuses   = 100
	maxDelay      = time.Hour
)

// Annotated is what a route's annotations say. Errs name each annotation
// that was ignored and why (the route's Accepted condition carries them).
type Annotated struct {
	Retry *apiv1.RetryPolicy
	Fault *apiv1.Fault
	Errs  []error
}

// Annotations reads the retry and fault annotations of a route.
func Annotations(ann map[string]string) Annotated {
	var a Annotated
	get := func(k string) (string, bool) {
		v, ok := ann[k]
		if ok && len(v) > maxAnnotation {
			a.Errs = append(a.Errs, fmt.Errorf("%s: longer than %d bytes", k, maxAnnotation))
			return "", false
		}
		return strings.TrimSpace(v), ok
	}
	read := func(k string, parse func(string) error) bool {
		v, ok := get(k)
		if !ok {
			return false
		}
		if err := parse(v); err != nil {
			a.Errs = append(a.Errs, fmt.Errorf("%s: %w", k, err))
			return false
		}
		return true
	}
	r := &apiv1.RetryPolicy{}
	retry := slices.Contains([]bool{
		read(AnnotationRetryLimit, func(v string) error { return parseUint(v, maxRetries, &r.MaxRetries) }),
		read(AnnotationRetryHTTPStatuses, func(v string) (err error) { r.RetryOnStatus, err = parseStatuses(v); return err }),
		read(AnnotationRetryGRPCCodes, func(v string) (err error) { r.RetryOnGrpc, err = parseGRPCCodes(v); return err }),
		read(AnnotationRetryTimeout, func(v string) error { return parseDuration(v, &r.PerTryTimeout) }),
		read(AnnotationRetryBackoff, func(v string) error { return parseDuration(v, &r.BackoffBase) }),
		read(AnnotationRetryBackoffMax, func(v string) error { return parseDuration(v, &r.BackoffMax) }),
		read(AnnotationRetryBudget, func(v string) error { return parseBudget(v, &r.BudgetRatio) }),
		read(AnnotationRetryBudgetMin, func(v string) error { return parseUint(v, 1_000_000, &r.BudgetMinPerSecond) }),
	}, true)
	if retry {
		a.Retry = r
	}
	f := &apiv1.Fault{}
	fault := slices.Contains([]bool{
		read(AnnotationAbortPercent, func(v string) error { return parsePercent(v, &f.AbortMillionths) }),
		read(AnnotationAbortStatus, func(v string) error { return parseStatus(v, &f.AbortHttpStatus) }),
		read(AnnotationAbortGRPCStatus, func(v string) error { return parseUint(v, 16, &f.AbortGrpcStatus) }),
		read(AnnotationDelayPercent, func(v string) error { return parsePercent(v, &f.DelayMillionths) }),
		read(AnnotationDelay, func(v string) error { return parseDuration(v, &f.Delay) }),
	}, true)
	if fault {
		a.Fault = a.checkFault(f)
	}
	return a
}

// checkFault fills a fault's defaults; nil when it injects nothing.
func (a *Annotated) checkFault(f *apiv1.Fault) *apiv1.Fault {
	if f.DelayMillionths > 0 && f.Delay == nil {
		a.Errs = append(a.Errs, fmt.Errorf("%s: set without %s", AnnotationDelayPercent, AnnotationDelay))
		f.DelayMillionths = 0
	}
	if f.AbortMillionths == 0 && f.DelayMillionths == 0 {
		return nil
	}
	if f.AbortMillionths > 0 && f.AbortHttpStatus == 0 {
		f.AbortHttpStatus = 500
	}
	if f.AbortMillionths > 0 && f.AbortGrpcStatus == 0 {
		f.AbortGrpcStatus = 14 // UNAVAILABLE
	}
	return f
}

func parseUint(v string, limit uint64, into *uint32) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("not a number: %w", err)
	}
	if n > limit {
		return fmt.Errorf("%d is over %d", n, limit)
	}
	*into = uint32(n)
	return nil
}

func parseStatus(v string, into *uint32) error {
	if err := parseUint(v, 599, into); err != nil {
		return err
	}
	if *into < 100 {
		return fmt.Errorf("%d is not an HTTP status", *into)
	}
	return nil
}

// parseStatuses reads "502,503" and ranges "500-504".
func parseStatuses(v string) ([]uint32, error) {
	var out []uint32
	for item := range strings.SplitSeq(v, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(item), "-")
		var a, b uint32
		if err := parseStatus(lo, &a); err != nil {
			return nil, err
		}
		b = a
		if isRange {
			if err := parseStatus(hi, &b); err != nil {
				return nil, err
			}
		}
		if b < a || len(out)+int(b-a) >= maxStatuses {
			return nil, fmt.Errorf("%q: a reversed range, or more than %d statuses", item, maxStatuses)
		}
		for s := a; s <= b; s++ {
			out = append(out, s)
		}
	}
	return out, nil
}

var grpcCodes = []string{"ok", "cancelled", "unknown", "invalid-argument", "deadline-exceeded", "not-found",
	"already-exists", "permission-denied", "resource-exhausted", "failed-precondition", "aborted",
	"out-of-range", "unimplemented", "internal", "unavailable", "data-loss", "unauthenticated"}

// parseGRPCCodes reads codes by number or name ("unavailable",
// "deadline-exceeded", "DEADLINE_EXCEEDED").
func parseGRPCCodes(v string) ([]uint32, error) {
	var out []uint32
	for item := range strings.SplitSeq(v, ",") {
		name := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(item)), "_", "-")
		if i := slices.Index(grpcCodes, name); i >= 0 {
			out = append(out, uint32(i))
			continue
		}
		var n uint32
		if err := parseUint(name, 16, &n); err != nil {
			return nil, fmt.Errorf("%q is not a gRPC code", item)
		}
		out = append(out, n)
	}
	if len(out) > len(grpcCodes) {
		return nil, errors.New("more codes than gRPC has")
	}
	return out, nil
}

func parseDuration(v string, into **durationpb.Duration) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return err
	}
	if d <= 0 || d > maxDelay {
		return fmt.Errorf("%s is not in (0, %s]", d, maxDelay)
	}
	*into = durationpb.New(d)
	return nil
}

// parsePercent reads a percentage ("5", "0.25") into millionths.
func parsePercent(v string, into *uint32) error {
	p, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(p) || p < 0 || p > 100 {
		return fmt.Errorf("%q is not a percentage in [0, 100]", v)
	}
	*into = uint32(math.Round(p * 10_000))
	return nil
}

// parseBudget reads a percentage of extra load into a ratio.
func parseBudget(v string, into *float32) error {
	var m uint32
	if err := parsePercent(v, &m); err != nil {
		return err
	}
	*into = float32(m) / 1_000_000
	return nil
}
