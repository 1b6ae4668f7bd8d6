package proxy

import (
	stdlog "log"
	"log/slog"

	"github.com/trellis-mesh/trellis/internal/ratelog"
	"github.com/trellis-mesh/trellis/proxy/metrics"
)

// directionProcess labels library log lines that cannot be told apart by
// direction: the standard log package is one per process.
const directionProcess = "process"

// captureStdLog sends the standard log package's lines to log at debug,
// once per cause per interval, counting each, and returns the function
// that restores the previous output.
func captureStdLog(log *slog.Logger, m *metrics.Metrics) func() {
	prevOut, prevFlags, prevPrefix := stdlog.Writer(), stdlog.Flags(), stdlog.Prefix()
	stdlog.SetFlags(0)
	stdlog.SetPrefix("")
	stdlog.SetOutput(&ratelog.LibWriter{
		Limiter: ratelog.New(log, 0), Scope: directionProcess,
		Args:  []any{"direction", directionProcess},
		Count: func(cause string) { m.ProtocolError(directionProcess, cause) },
	})
	return func() {
		stdlog.SetOutput(prevOut)
		stdlog.SetFlags(prevFlags)
		stdlog.SetPrefix(prevPrefix)
	}
}
