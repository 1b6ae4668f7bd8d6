package app

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/demoapp/loadgen"
	"github.com/trellis-mesh/trellis/demoapp/services"
	"github.com/trellis-mesh/trellis/internal/syncbuf"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// runRole runs cfg in the background until ctx ends; the channel gets
// Run's result.
func runRole(t *testing.T, ctx context.Context, cfg Config) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	return done
}

// TestChainAndLoadgen runs every role through Run, wired directly
// (authors <- books <- web <- loadgen), and checks the load generator's
// final line.
func TestChainAndLoadgen(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	authorsLn, booksLn, webLn := listen(t), listen(t), listen(t)
	var servers []<-chan error
	servers = append(servers,
		runRole(t, ctx, Config{Role: "authors", Listener: authorsLn}),
		runRole(t, ctx, Config{Role: "books", Listener: booksLn, Version: "v2", Authors: authorsLn.Addr().String()}),
		runRole(t, ctx, Config{Role: "web", Listener: webLn, Books: booksLn.Addr().String()}),
	)

	resp, err := http.Get("http://" + webLn.Addr().String() + "/books/4")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var page services.PageJSON
	if err := json.Unmarshal(body, &page); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /books/4: %d %s (%v)", resp.StatusCode, body, err)
	}
	if page.ServedBy != "web" || page.Book.ServedBy != "books" || page.Book.Version != "v2" || page.Book.Author.ServedBy != "authors" {
		t.Errorf("page %+v: want names defaulting to roles and version v2", page)
	}

	var out syncbuf.Buffer
	err = Run(ctx, Config{
		Role: "loadgen", Stdout: &out,
		Load: loadgen.Config{Target: webLn.Addr().String(), RPS: 100, Path: "/books/", Duration: 300 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	var res loadgen.Result
	line := out.String()
	if strings.Count(line, "\n") != 1 {
		t.Fatalf("loadgen output %q, want one line", line)
	}
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		t.Fatalf("loadgen output %q: %v", line, err)
	}
	if res.Sent+res.Dropped != 30 || res.Succeeded != res.Sent || res.Failed != 0 {
		t.Errorf("loadgen result %+v, want 30 intended requests, all ok", res)
	}

	cancel()
	for i, done := range servers {
		if err := <-done; err != nil {
			t.Errorf("server %d: %v", i, err)
		}
	}
}

func TestEchoRoleHealthz(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ln := listen(t)
	done := runRole(t, ctx, Config{Role: "echo", Listener: ln, FailRate: 1})
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
}

func TestPortInUse(t *testing.T) {
	busy := listen(t)
	defer busy.Close()
	for _, role := range []string{"web", "echo", "authors"} {
		err := Run(context.Background(), Config{Role: role, Listen: busy.Addr().String(), Books: "b:80"})
		if err == nil || !strings.Contains(err.Error(), "address already in use") {
			t.Errorf("%s: error %v, want address already in use", role, err)
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // "" for valid
	}{
		{"web ok", Config{Role: "web", Listen: "127.0.0.1:1", Books: "books.demo:80"}, ""},
		{"loadgen without listen", Config{Role: "loadgen", Load: loadgen.Config{Target: "web.demo:80"}}, ""},
		{"unknown role", Config{Role: "db", Listen: "127.0.0.1:1"}, "--role"},
		{"missing listen", Config{Role: "echo"}, "--listen is required"},
		{"bad listen", Config{Role: "echo", Listen: "nope"}, "--listen"},
		{"bad proxy", Config{Role: "echo", Listen: "127.0.0.1:1", Proxy: "1.2.3.4"}, "--proxy"},
		{"fail rate", Config{Role: "echo", Listen: "127.0.0.1:1", FailRate: 1.5}, "--fail-rate"},
		{"fail for", Config{Role: "echo", Listen: "127.0.0.1:1", FailRate: 1, FailFor: -time.Second}, "--fail-for"},
		{"slow start", Config{Role: "echo", Listen: "127.0.0.1:1", SlowStartFor: 20 * time.Second, SlowStartDelay: 200 * time.Millisecond}, ""},
		{"slow start delay", Config{Role: "echo", Listen: "127.0.0.1:1", SlowStartFor: time.Second, SlowStartDelay: time.Hour}, "--slow-start-delay"},
		{"web without books", Config{Role: "web", Listen: "127.0.0.1:1"}, "--books"},
		{"books without authors", Config{Role: "books", Listen: "127.0.0.1:1"}, "--authors"},
		{"loadgen without target", Config{Role: "loadgen"}, "--target"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.want == "" {
				if err != nil {
					t.Errorf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}
