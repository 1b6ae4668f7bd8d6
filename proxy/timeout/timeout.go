// Package timeout is the stage that bounds a request's exchange with its
// destination: the route's timeouts.request when the request matched a
// route that sets one (0 there: no bound), else --request-timeout. The
// stages after it work under Exchange.Ctx, which ends after the timeout,
// while the client's own context (Exchange.R.Context()) still tells
// whether the client went away. A request that runs out of time is
// answered 504 timeout by proxyerr.Classify.
package timeout

import (
	"context"
	"time"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// Layer bounds the rest of the chain to the route's timeout, else to d
// (d <= 0: no bound).
func Layer(d time.Duration) pipeline.Layer {
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
			limit := d
			if t := x.Route.GetTimeout(); t != nil {
				limit = t.AsDuration()
			}
			if limit <= 0 {
				return next.Serve(x)
			}
			parent := x.Ctx
			ctx, cancel := context.WithTimeout(parent, limit)
			defer cancel()
			x.Ctx = ctx
			err := next.Serve(x)
			x.Ctx = parent
			return err
		})
	}
}
