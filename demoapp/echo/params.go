package echo

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
)

// Bounds of the query parameters, so that a request cannot keep the server
// busy for long or make it allocate much.
const (
	MaxSlowMS       = 60_000
	MaxStreamChunks = 100_000
	MaxStreamMS     = 10_000
)

// ErrBadParam is wrapped by every parameter parsing error.
var ErrBadParam = errors.New("bad parameter")

// intParam parses the query parameter name as a decimal integer in
// [lo, hi]; a missing or empty parameter gives def.
func intParam(q url.Values, name string, def, lo, hi int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	if len(s) > 12 {
		return 0, fmt.Errorf("%w: %s=%.16q is too long", ErrBadParam, name, s)
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%w: %s=%q is not an integer", ErrBadParam, name, s)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s=%d is outside [%d, %d]", ErrBadParam, name, n, lo, hi)
	}
	return n, nil
}

// ParseStatus parses the {code} of /status/{code}: an HTTP status from 200
// to 599 (1xx codes are not final responses, so they cannot be asked for).
func ParseStatus(s string) (int, error) {
	if len(s) != 3 {
		return 0, fmt.Errorf("%w: status %.16q must have three digits", ErrBadParam, s)
	}
	n := 0
	for i := 0; i < 3; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%w: status %q is not a number", ErrBadParam, s)
		}
		n = n*10 + int(c-'0')
	}
	if n < 200 || n > 599 {
		return 0, fmt.Errorf("%w: status %d is outside [200, 599]", ErrBadParam, n)
	}
	return n, nil
}

// StreamParams are the parameters of /stream.
type StreamParams struct {
	Chunks int // number of chunks, each flushed on its own
	MS     int // delay before each chunk after the first
}

// ParseStream parses the raw query of /stream?chunks=N&ms=M
// (defaults: 10 chunks, 0 ms).
func ParseStream(rawQuery string) (StreamParams, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return StreamParams{}, fmt.Errorf("%w: query: %w", ErrBadParam, err)
	}
	chunks, err := intParam(q, "chunks", 10, 0, MaxStreamChunks)
	if err != nil {
		return StreamParams{}, err
	}
	ms, err := intParam(q, "ms", 0, 0, MaxStreamMS)
	if err != nil {
		return StreamParams{}, err
	}
	return StreamParams{Chunks: chunks, MS: ms}, nil
}

// ParseSlow parses the raw query of /slow?ms=N (default 100 ms).
func ParseSlow(rawQuery string) (int, error) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return 0, fmt.Errorf("%w: query: %w", ErrBadParam, err)
	}
	return intParam(q, "ms", 100, 0, MaxSlowMS)
}
