package dashboardcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/cli/output"
	"github.com/trellis-mesh/trellis/viz/dashboard"
	"github.com/trellis-mesh/trellis/viz/model"
)

type emptySource struct{}

func (emptySource) Stat(context.Context, model.Query) ([]model.WorkloadStat, error) { return nil, nil }
func (emptySource) Edges(context.Context, model.Query) ([]model.Edge, error)        { return nil, nil }
func (emptySource) Routes(context.Context, model.Query) ([]model.RouteStat, error)  { return nil, nil }

func TestServe(t *testing.T) {
	for _, tc := range []struct {
		name      string
		format    output.Format
		noBrowser bool
	}{
		{"text, browser", output.Text, false},
		{"json, no browser", output.JSON, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stdout, stderr bytes.Buffer
			ready, opened := make(chan string, 1), make(chan string, 1)
			done := make(chan error, 1)
			go func() {
				done <- Serve(ctx, ServeOptions{Address: "127.0.0.1", Port: 0, NoBrowser: tc.noBrowser, Output: tc.format,
					Stdout: &stdout, Stderr: &stderr, Ready: func(u string) { ready <- u },
					Open: func(u string) error { opened <- u; return nil }}, dashboard.Config{Source: emptySource{}, Local: true})
			}()
			var url string
			select {
			case url = <-ready:
			case err := <-done:
				t.Fatal(err)
			}
			if !strings.HasPrefix(url, "http://127.0.0.1:") {
				t.Fatalf("url %s", url)
			}
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") != dashboard.CSP {
				t.Errorf("GET %s: %s, CSP %q", url, resp.Status, resp.Header.Get("Content-Security-Policy"))
			}
			// The Host check is on: another name for the same address is refused.
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Host = "rebound.example"
			if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("foreign Host: %v %v", resp.Status, err)
			}
			select {
			case u := <-opened:
				if tc.noBrowser || u != url {
					t.Errorf("opened %s (--no-browser %v)", u, tc.noBrowser)
				}
			default:
				if !tc.noBrowser {
					t.Error("no browser opened")
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve after cancel: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Serve did not return after cancel")
			}
			if tc.format == output.JSON {
				var s Served
				if err := json.Unmarshal(stdout.Bytes(), &s); err != nil || s.URL != url {
					t.Errorf("-o json: %q (%v)", stdout.String(), err)
				}
			} else if !strings.Contains(stdout.String(), url) {
				t.Errorf("stdout %q lacks the URL", stdout.String())
			}
		})
	}
}

func TestServeRefusesBadFlags(t *testing.T) {
	for _, o := range []ServeOptions{{Address: "localhost", Port: 1}, {Address: "127.0.0.1", Port: 70000}} {
		err := Serve(context.Background(), o, dashboard.Config{Source: emptySource{}})
		if err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%+v: %v, want an error naming the flag", o, err)
		}
	}
}
