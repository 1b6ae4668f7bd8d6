// Command trellis is the Trellis command line.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellis-mesh/trellis/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the command shuts down cleanly; a second
		// one gets the default behaviour and ends the process at once.
		<-ctx.Done()
		stop()
	}()
	err := cli.NewRootCommand().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "trellis: %v\n", err)
		os.Exit(1)
	}
}
