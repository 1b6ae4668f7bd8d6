package demo

import (
	"context"
	"fmt"
)

// watchAndServe runs the tables and, with Options.Dashboard, the dashboard
// beside them: a dashboard that fails (its port taken) stops the demo
// with its error.
func (d *demo) watchAndServe(ctx context.Context) error {
	if d.opts.Dashboard == nil {
		return d.watch(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var dashErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.opts.Dashboard(ctx, d.plan); err != nil && ctx.Err() == nil {
			dashErr = fmt.Errorf("dashboard: %w", err)
			cancel(dashErr)
		}
	}()
	err := d.watch(ctx)
	cancel(nil)
	<-done
	if dashErr != nil {
		return dashErr
	}
	return err
}
