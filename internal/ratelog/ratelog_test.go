package ratelog

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func newTest(level slog.Level) (*Limiter, *bytes.Buffer, *time.Time) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})), time.Minute)
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	return l, &buf, &now
}

func TestLimiterOncePerCausePerInterval(t *testing.T) {
	l, buf, now := newTest(slog.LevelInfo)
	ctx := context.Background()
	for range 50 {
		l.Log(ctx, slog.LevelInfo, "a", "cause a")
		l.Log(ctx, slog.LevelInfo, "b", "cause b")
	}
	if got := strings.Count(buf.String(), "\n"); got != 2 {
		t.Fatalf("%d lines, want one per cause:\n%s", got, buf)
	}
	*now = now.Add(time.Minute)
	buf.Reset()
	if !l.Log(ctx, slog.LevelInfo, "a", "cause a") || !strings.Contains(buf.String(), "suppressed=49") {
		t.Fatalf("after the interval, want the line with the count held back:\n%s", buf)
	}
}

func TestLimiterBelowLevelIsNotCounted(t *testing.T) {
	l, buf, _ := newTest(slog.LevelInfo)
	if l.Log(context.Background(), slog.LevelDebug, "a", "debug") || buf.Len() != 0 {
		t.Fatalf("a debug line was written at info: %q", buf)
	}
	if !l.Log(context.Background(), slog.LevelInfo, "a", "info") {
		t.Fatal("a filtered debug line used up the cause's slot")
	}
}

func TestLimiterBoundsCauses(t *testing.T) {
	l, _, _ := newTest(slog.LevelInfo)
	for i := range 5 * maxCauses {
		l.Log(context.Background(), slog.LevelInfo, fmt.Sprint(i), "m")
	}
	if n := len(l.causes); n > maxCauses+1 {
		t.Fatalf("%d causes kept, want at most %d", n, maxCauses+1)
	}
}

func TestCause(t *testing.T) {
	tests := []struct{ line, want string }{
		{"http2: server connection error from 127.0.0.1:5555: connection error: COMPRESSION_ERROR", "compression_error"},
		{"http2: server connection error from 127.0.0.1:5555: connection error: PROTOCOL_ERROR", "protocol_error"},
		{"http2: server connection error from [::1]:1: connection error: FRAME_SIZE_ERROR", "frame_size_error"},
		{"http2: server: error reading preface from client 127.0.0.1:1: bogus greeting \"GET / HTTP/1.1\"", CauseBadPreface},
		{"timeout waiting for SETTINGS frames from 127.0.0.1:1", CauseSettingsTimeout},
		{"timeout waiting for PING response", CausePingTimeout},
		{"http2: received GOAWAY [FrameHeader GOAWAY len=8], starting graceful shutdown", CauseGoAway},
		{"http: TLS handshake error from 1.2.3.4:5: EOF", CauseTLSHandshake},
		{"http2: invalid header: invalid header field name \"a b\"", CauseBadHeader},
		{"protocol error: received DATA after END_STREAM", CauseProtocol},
		{"http2: panic serving 127.0.0.1:1: boom", CausePanic},
		{"http2: Transport: cannot retry err", CauseOther},
		{"CANCELED by someone", CauseOther},
	}
	for _, tt := range tests {
		if got := Cause(tt.line); got != tt.want {
			t.Errorf("Cause(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func FuzzCause(f *testing.F) {
	f.Add("http2: server connection error from 127.0.0.1:5555: connection error: COMPRESSION_ERROR")
	f.Add("http2: received GOAWAY")
	f.Add("ENHANCE_YOUR_CALM")
	f.Fuzz(func(t *testing.T, line string) {
		c := Cause(line)
		// A bounded label: one of the fixed causes or an HTTP/2 code name.
		if !h2Codes[strings.ToUpper(c)] && !strings.Contains(" "+strings.Join(fixedCauses, " ")+" ", " "+c+" ") {
			t.Fatalf("Cause(%q) = %q: not a fixed cause", line, c)
		}
	})
}

var fixedCauses = []string{CauseBadPreface, CauseBadHeader, CauseSettingsTimeout, CausePingTimeout, CauseGoAway, CauseTLSHandshake, CauseProtocol, CausePanic, CauseOther}

func TestLibWriterCountsAndLogsAtDebug(t *testing.T) {
	l, buf, _ := newTest(slog.LevelInfo)
	counts := map[string]int{}
	lg := NewLogLogger(&LibWriter{Limiter: l, Scope: "inbound", Count: func(c string) { counts[c]++ }, Args: []any{"direction", "inbound"}})
	for range 10 {
		lg.Printf("http2: server connection error from %s: connection error: %s", "127.0.0.1:1", "COMPRESSION_ERROR")
	}
	if counts["compression_error"] != 10 {
		t.Errorf("counted %v, want 10 compression_error", counts)
	}
	if buf.Len() != 0 {
		t.Errorf("library lines reached the output at info:\n%s", buf)
	}
	l2, buf2, _ := newTest(slog.LevelDebug)
	lg = NewLogLogger(&LibWriter{Limiter: l2, Scope: "inbound", Args: []any{"direction", "inbound"}})
	for range 10 {
		lg.Print("http2: server connection error from 127.0.0.1:1: connection error: COMPRESSION_ERROR")
	}
	if n := strings.Count(buf2.String(), "\n"); n != 1 || !strings.Contains(buf2.String(), "level=DEBUG") || !strings.Contains(buf2.String(), "cause=compression_error") {
		t.Errorf("want one structured debug line:\n%s", buf2)
	}
}

func TestGRPCLogger(t *testing.T) {
	l, buf, _ := newTest(slog.LevelInfo)
	g := GRPCLogger{L: l}
	g.Infof("[core] Channel #%d: connecting", 1)
	g.Warningf("[core] addrConn.createTransport failed to connect to %s", "127.0.0.1:1")
	if buf.Len() != 0 || g.V(0) {
		t.Fatalf("grpc info and warnings at --log-level info:\n%s (V(0)=%v)", buf, g.V(0))
	}
	for i := range 5 {
		g.Errorf("[transport] something broke at %d: %s", i, "x")
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Fatalf("%d warn lines for 5 errors of one cause, want 1:\n%s", n, buf)
	}
}
