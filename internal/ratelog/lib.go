package ratelog

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// Library log causes (the cause label of trellis_protocol_errors_total).
const (
	CauseBadPreface      = "bad_preface"
	CauseBadHeader       = "bad_header"
	CauseSettingsTimeout = "settings_timeout"
	CausePingTimeout     = "ping_timeout"
	CauseGoAway          = "goaway"
	CauseTLSHandshake    = "tls_handshake"
	CauseProtocol        = "protocol_error"
	CausePanic           = "panic"
	CauseOther           = "other"
)

// h2Codes are the HTTP/2 error code names (RFC 9113 7) x/net prints in its
// connection errors; a line naming one is counted under its lower case.
var h2Codes = map[string]bool{
	"PROTOCOL_ERROR": true, "INTERNAL_ERROR": true, "FLOW_CONTROL_ERROR": true,
	"SETTINGS_TIMEOUT": true, "STREAM_CLOSED": true, "FRAME_SIZE_ERROR": true,
	"REFUSED_STREAM": true, "CANCEL": true, "COMPRESSION_ERROR": true,
	"CONNECT_ERROR": true, "ENHANCE_YOUR_CALM": true, "INADEQUATE_SECURITY": true,
	"HTTP_1_1_REQUIRED": true,
}

// Cause sorts a library log line into a small, fixed set of causes, so that
// a metric label and the rate limit stay bounded whatever a peer sends.
func Cause(line string) string {
	for _, w := range strings.FieldsFunc(line, func(r rune) bool {
		return !(r == '_' || r == '1' || (r >= 'A' && r <= 'Z'))
	}) {
		if h2Codes[w] {
			return strings.ToLower(w)
		}
	}
	switch {
	case strings.Contains(line, "panic"):
		return CausePanic
	case strings.Contains(line, "preface"):
		return CauseBadPreface
	case strings.Contains(line, "timeout waiting for SETTINGS"):
		return CauseSettingsTimeout
	case strings.Contains(line, "timeout waiting for PING"):
		return CausePingTimeout
	case strings.Contains(line, "GOAWAY"):
		return CauseGoAway
	case strings.Contains(line, "TLS handshake"):
		return CauseTLSHandshake
	case strings.Contains(line, "header"):
		return CauseBadHeader
	case strings.Contains(line, "protocol error"):
		return CauseProtocol
	}
	return CauseOther
}

// LibWriter takes the lines a library prints with the standard log package
// (x/net/http2, net/http's ErrorLog) and logs them through slog at debug
// (a panic at warn: it is a bug, not a peer's doing), at most once per
// cause per interval, after counting each with Count.
type LibWriter struct {
	Limiter *Limiter
	// Count is called once per line with its cause (nil: not counted).
	Count func(cause string)
	// Scope keeps the rate limit of one user of a shared Limiter apart
	// from another's (e.g. "inbound").
	Scope string
	// Args are added to every line (e.g. "direction", "inbound").
	Args []any
}

// Write logs one line (log.Logger writes each message in one call).
func (w *LibWriter) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	cause := Cause(line)
	if w.Count != nil {
		w.Count(cause)
	}
	level := slog.LevelDebug
	if cause == CausePanic {
		level = slog.LevelWarn
	}
	args := append([]any{"cause", cause, "line", line}, w.Args...)
	w.Limiter.Log(context.Background(), level, w.Scope+"/"+cause, "library log", args...)
	return len(p), nil
}

// NewLogLogger returns a *log.Logger for http.Server.ErrorLog and the like
// that writes through w.
func NewLogLogger(w *LibWriter) *log.Logger {
	return log.New(w, "", 0)
}
