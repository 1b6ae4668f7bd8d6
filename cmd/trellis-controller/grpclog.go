package main

import (
	"log/slog"

	"google.golang.org/grpc/grpclog"

	"github.com/trellis-mesh/trellis/internal/ratelog"
)

// routeGRPCLog sends grpc-go's own logs through slog (Info and Warning at
// debug, Error at warn), once per cause per minute, instead of plain lines
// on stderr outside --log-level. grpclog's logger is process-wide: set once,
// before serving.
func routeGRPCLog(log *slog.Logger) {
	grpclog.SetLoggerV2(ratelog.GRPCLogger{L: ratelog.New(log.With("component", "grpc"), 0)})
}
