package echo

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/internal/syncbuf"
)

// TestAccessLog: with AccessLog every request received is logged with its
// URI and User-Agent (the end-to-end policy suites count these lines);
// without it nothing is; /admin answers.
func TestAccessLog(t *testing.T) {
	for _, on := range []bool{true, false} {
		var sink syncbuf.Buffer
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		log := slog.New(slog.NewTextHandler(&sink, nil))
		go func() { done <- Serve(ctx, ln, Config{Name: "e", Log: log, AccessLog: on}) }()
		client := &http.Client{Timeout: 10 * time.Second}
		for _, path := range []string{"/echo?caller=a", "/admin", "/healthz"} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+path, nil)
			req.Header.Set("User-Agent", "probe-ua")
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %d %s", path, resp.StatusCode, body)
			}
			if path == "/admin" && string(body) != "admin ok\n" {
				t.Errorf("/admin body %q", body)
			}
		}
		client.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		got := sink.String()
		n := strings.Count(got, "msg=access")
		switch {
		case on && (n != 3 || !strings.Contains(got, `uri="/echo?caller=a"`) || !strings.Contains(got, "ua=probe-ua")):
			t.Errorf("access log on: %d lines, want 3 with URI and User-Agent:\n%s", n, got)
		case !on && n != 0:
			t.Errorf("access log off: %d lines:\n%s", n, got)
		}
	}
}
