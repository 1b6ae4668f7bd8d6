// Package timeout is the stage that bounds a request's exchange with its
// destination (--request-timeout): the stages after it work under
// Exchange.Ctx, which ends after the timeout, while the client's own
// context (Exchange.R.Context()) still tells whether the client went
// away. A request that runs out of time is answered 504 timeout by
// proxyerr.Classify.
package timeout

import (
	"context"
	"time"

	"github.com/trellis-mesh/trellis/proxy/pipeline"
)

// Layer bounds the rest of the chain to d; d <= 0: no bound.
func Layer(d time.Duration) pipeline.Layer {
	if d <= 0 {
		return pipeline.Identity
	}
	return func(next pipeline.Handler) pipeline.Handler {
		return pipeline.HandlerFunc(func(x *pipeline.Exchange) error {
			parent := x.Ctx
			ctx, cancel := context.WithTimeout(parent, d)
			defer cancel()
			x.Ctx = ctx
			err := next.Serve(x)
			x.Ctx = parent
			return err
		})
	}
}
