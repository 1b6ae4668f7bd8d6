// Command trellis is the Trellis command line.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/trellis-mesh/trellis/cli"
	"github.com/trellis-mesh/trellis/cli/output"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal the command shuts down cleanly; a second
		// one gets the default behaviour and ends the process at once.
		<-ctx.Done()
		stop()
	}()
	cmd, err := cli.NewRootCommand().ExecuteContextC(ctx)
	stop()
	if err != nil {
		// One line on stderr, and an error document on stdout under -o json|yaml.
		output.ReportError(cmd, err, os.Stdout, os.Stderr)
		os.Exit(1)
	}
}
