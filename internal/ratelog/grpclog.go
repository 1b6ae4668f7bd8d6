package ratelog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// GRPCLogger is a grpclog.LoggerV2 that writes grpc-go's logs through a
// Limiter: Info and Warning at debug (grpc-go reports every reconnect
// there; the callers log what matters to an operator themselves), Error at
// warn, Fatal at error before exiting. Each is limited per cause.
type GRPCLogger struct {
	L *Limiter
}

func (g GRPCLogger) log(level slog.Level, msg string) {
	msg = strings.TrimRight(msg, "\n")
	g.L.Log(context.Background(), level, "grpc/"+grpcCause(msg), "grpc", "line", msg)
}

// grpcCause is a message with its variable parts (addresses, numbers,
// anything after a colon) cut, so one kind of message is one cause.
func grpcCause(msg string) string {
	if i := strings.IndexByte(msg, ':'); i >= 0 {
		msg = msg[:i]
	}
	msg = strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return -1
		}
		return r
	}, msg)
	if len(msg) > 48 {
		msg = msg[:48]
	}
	return msg
}

func (g GRPCLogger) Info(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g GRPCLogger) Infoln(args ...any) { g.log(slog.LevelDebug, fmt.Sprintln(args...)) }
func (g GRPCLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g GRPCLogger) Warning(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g GRPCLogger) Warningln(args ...any) { g.log(slog.LevelDebug, fmt.Sprintln(args...)) }
func (g GRPCLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g GRPCLogger) Error(args ...any)   { g.log(slog.LevelWarn, fmt.Sprint(args...)) }
func (g GRPCLogger) Errorln(args ...any) { g.log(slog.LevelWarn, fmt.Sprintln(args...)) }
func (g GRPCLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelWarn, fmt.Sprintf(format, args...))
}

// Fatal logs and exits, as grpclog requires.
func (g GRPCLogger) Fatal(args ...any) { g.fatal(fmt.Sprint(args...)) }

// Fatalln logs and exits, as grpclog requires.
func (g GRPCLogger) Fatalln(args ...any) { g.fatal(fmt.Sprintln(args...)) }

// Fatalf logs and exits, as grpclog requires.
func (g GRPCLogger) Fatalf(format string, args ...any) { g.fatal(fmt.Sprintf(format, args...)) }

func (g GRPCLogger) fatal(msg string) {
	g.L.Logger().Error("grpc", "line", strings.TrimRight(msg, "\n"))
	os.Exit(1)
}

// V reports whether verbosity level l is on: level 0 only, and only when
// debug lines are written at all (grpc-go checks V before costly logs).
func (g GRPCLogger) V(l int) bool {
	return l <= 0 && g.L.Logger().Enabled(context.Background(), slog.LevelDebug)
}
