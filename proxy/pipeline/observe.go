package pipeline

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/trellis-mesh/trellis/proxy/metrics"
	"github.com/trellis-mesh/trellis/proxy/proxyerr"
)

// Observe is the outermost stage of both chains and the one place a
// request leaves: it renders a returned *proxyerr.Error (status,
// trellis-error, trellis-proxy-error, body), counts the request, its
// response, gRPC status, failure and latency, and logs an error answer.
type Observe struct {
	Direction string
	Metrics   *metrics.Metrics
	Errors    *proxyerr.Renderer
	// Begin, when set, fills in what the connection tells (Conn, Key, LogKey)
	// before the first stage; it may count the request at once
	// (Exchange.Metrics) when the key is already final.
	Begin func(x *Exchange)
	// Next is the rest of the chain.
	Next Handler

	pool sync.Pool
}

// ServeHTTP runs one request through the chain.
func (o *Observe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x, _ := o.pool.Get().(*Exchange)
	if x == nil {
		x = &Exchange{m: o.Metrics}
	}
	x.W, x.R, x.Ctx, x.Start = w, r, r.Context(), time.Now()
	if c := ConnOf(r.Context()); c != nil {
		x.Conn = *c
	}
	x.Key.Direction = o.Direction
	if o.Begin != nil {
		o.Begin(x)
	}
	err := o.Next.Serve(x)
	o.exit(x, err)
	abort := x.abort
	x.reset()
	o.pool.Put(x)
	if abort {
		// A response that broke mid-body: the client sees its stream
		// reset (HTTP/2) or its connection closed (HTTP/1).
		panic(http.ErrAbortHandler)
	}
}

// exit is the request-exit bookkeeping, the same for every way out.
func (o *Observe) exit(x *Exchange, err error) {
	if err != nil {
		if errors.Is(err, ErrCancelled) {
			x.Metrics().Cancelled(0)
			return
		}
		var e *proxyerr.Error
		if !errors.As(err, &e) {
			e = &proxyerr.Error{Status: http.StatusBadGateway, Reason: proxyerr.ReasonUpstream, Culprit: proxyerr.Mesh, Msg: err.Error(), Err: err}
		}
		e = proxyerr.WithGRPC(e, proxyerr.GRPCCall(x.R, x.CallerH1))
		var args []any
		if x.LogKey != "" {
			args = []any{x.LogKey, x.LogVal}
		}
		o.Errors.Answer(x.R.Context(), x.W, x.Metrics(), e, x.Start, args...)
		return
	}
	if !x.wrote {
		// Nothing of HTTP's to count (a CONNECT tunnel, counted as TCP).
		return
	}
	hm := x.Metrics()
	if x.cancelled {
		// The client reset or abandoned the stream: not the app's failure.
		hm.Cancelled(x.status)
		return
	}
	hm.Response(x.status, x.grpc, x.broken)
	if !x.noLatency {
		hm.Latency.Observe(time.Since(x.Start).Seconds())
	}
}
