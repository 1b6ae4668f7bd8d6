// Package fault is the outbound fault injection stage: a route's Fault
// (apiv1.Fault) delays or aborts a share of the requests it matches, for
// chaos testing. Every injected fault is marked so that nobody mistakes
// it for a real one: the response carries "trellis-fault: injected", and
// trellis_fault_injected_total{route,kind} counts it. An abort is still
// counted in trellis_responses_total with the status it gave (the caller
// did see it: its success rate during an experiment is the point), with
// peer_identity "" and tls "false" since no endpoint was involved, and
// never in trellis_request_errors_total: subtract the fault counter for
// the real failures (docs/traffic.md, "Fault injection").
package fault

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/pipeline"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Header marks a response a fault touched (an abort, or a delayed
// response).
const Header = "Trellis-Fault"

// Million is the denominator of the shares.
const Million = 1_000_000

// Stage injects routes' faults.
type Stage struct {
	Metrics *metrics.Routes // nil: not counted
	// Rand returns a uniform random number; nil: math/rand/v2.
	Rand func() uint64
}

// mark is the response edit of a delayed request.
type mark struct{}

func (mark) EditResponse(h http.Header) { h[Header] = []string{"injected"} }

// Layer is the stage.
func (s *Stage) Layer(next pipeline.Handler) pipeline.Handler {
	return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
		f := x.Route.GetFault()
		if f == nil {
			return next.Serve(x)
		}
		name := x.Route.GetName()
		if d := f.GetDelay().AsDuration(); d > 0 && s.hit(f.GetDelayMillionths()) {
			s.Metrics.Fault(name, metrics.FaultDelay)
			x.AddResponseEdit(mark{})
			if err := s.delay(x, d); err != nil {
				return err
			}
		}
		if s.hit(f.GetAbortMillionths()) {
			s.Metrics.Fault(name, metrics.FaultAbort)
			s.abort(x, x.Route.GetKind() == "grpc", int(f.GetAbortHttpStatus()), f.GetAbortGrpcStatus())
			return nil
		}
		return next.Serve(x)
	})
}

func (s *Stage) hit(millionths uint32) bool {
	if millionths == 0 {
		return false
	}
	n := rand.Uint64()
	if s.Rand != nil {
		n = s.Rand()
	}
	return n%Million < uint64(millionths)
}

// delay waits d under the exchange's deadline: a delay past the route's
// timeout ends as that timeout would.
func (s *Stage) delay(x *pipeline.Exchange, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-x.Ctx.Done():
		if x.R.Context().Err() != nil {
			return pipeline.ErrCancelled
		}
		return proxyerr.Classify(x.Ctx, errors.Join(errors.New("injected delay"), x.Ctx.Err()), proxyerr.ToPeer, x.Dest.Dst)
	}
}

// abort answers x itself: a gRPC route's callers get a trailers-only
// response with the grpc-status (UNAVAILABLE by default), the others the
// HTTP status (500 by default, as the controller's annotation).
func (s *Stage) abort(x *pipeline.Exchange, grpc bool, status int, code uint32) {
	h := x.W.Header()
	h[Header] = []string{"injected"}
	if grpc {
		if code == 0 || code > 16 {
			code = 14
		}
		g := strconv.FormatUint(uint64(code), 10)
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{g}
		h["Grpc-Message"] = []string{"fault injected"}
		x.W.WriteHeader(http.StatusOK)
		x.Wrote(http.StatusOK, g, nil)
		return
	}
	if status < 200 || status > 599 {
		status = http.StatusInternalServerError
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	x.W.WriteHeader(status)
	_, err := x.W.Write([]byte("fault injected\n"))
	x.Wrote(status, "", err)
}
