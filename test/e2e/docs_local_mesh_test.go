package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/harness"
)

const (
	localMeshScript = "../../docs/examples/local-mesh.sh"
	localModeDoc    = "../../docs/local-mode.md"
	localMeshDocSec = "## Your own app behind two proxies"
)

// TestDocsLocalMeshExample runs docs/examples/local-mesh.sh, the
// copy-paste setup of docs/local-mode.md (a controller, a server proxy in
// front of the user's app, a client proxy that curl talks to), with the
// freshly built binaries, free ports and an echo app in this process, and
// checks that curl's request reached the app through the mesh: the app
// served it and the server proxy's metric line the script prints names the
// client's identity over mTLS.
func TestDocsLocalMeshExample(t *testing.T) {
	requireBinaries(t)
	a := startApp(t, "docs-app")
	work := t.TempDir()
	env := []string{
		"BIN=" + filepath.Dir(bins.Proxy),
		"APP_ADDR=" + a.Addr,
		"WORK=" + work,
		"KEEP_RUNNING=0",
	}
	for _, name := range []string{"CTRL", "CTRL_ADMIN", "CLIENT_OUT", "CLIENT_IN", "CLIENT_ADMIN", "SERVER_OUT", "SERVER_IN", "SERVER_ADMIN", "CLIENT_TAP", "SERVER_TAP"} {
		env = append(env, name+"="+ports.Addr(t))
	}
	logDir := t.TempDir()
	args := append(env, "sh", localMeshScript)
	began := time.Now()
	p := harness.StartProcess(t, "local-mesh.sh", logDir, "/usr/bin/env", args...)
	exited, err := p.Wait(2 * time.Minute)
	out, _ := os.ReadFile(p.LogPath)
	if !exited || err != nil {
		t.Fatalf("local-mesh.sh: exited=%v err=%v after %s\n%s\n%s", exited, err, time.Since(began), out, tailLogs(work))
	}
	t.Logf("local-mesh.sh ran in %s", time.Since(began).Round(time.Millisecond))
	if a.served.Load() == 0 {
		t.Fatalf("the app served nothing; script output:\n%s", out)
	}
	// curl -i printed the app's own response header.
	if !regexp.MustCompile(`(?mi)^Echo-Served-By: docs-app\r?$`).Match(out) {
		t.Errorf("curl's output has no Echo-Served-By: docs-app from the app:\n%s", out)
	}
	meshed := regexp.MustCompile(`(?m)^trellis_requests_total\{direction="inbound",[^}]*peer_identity="spiffe://cluster\.local/ns/local/sa/client",tls="true"\} [1-9]`)
	if !meshed.Match(out) {
		t.Errorf("the script printed no inbound mTLS request from the client identity:\n%s\n%s", out, tailLogs(work))
	}
}

// TestDocsLocalMeshMatchesScript checks that every sh block of the
// walkthrough in docs/local-mode.md is verbatim part of
// docs/examples/local-mesh.sh, which TestDocsLocalMeshExample runs: the
// page cannot drift from what is tested.
func TestDocsLocalMeshMatchesScript(t *testing.T) {
	doc, err := os.ReadFile(localModeDoc)
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(localMeshScript)
	if err != nil {
		t.Fatal(err)
	}
	blocks := shBlocks(t, string(doc), localMeshDocSec)
	if len(blocks) < 8 {
		t.Fatalf("section %q of %s has %d sh blocks, want the whole walkthrough (at least 8)", localMeshDocSec, localModeDoc, len(blocks))
	}
	for _, b := range blocks {
		if strings.HasPrefix(b, "make build\n") {
			continue // how to run the script, not part of it
		}
		if !strings.Contains(string(script), b) {
			t.Errorf("this block of %s is not in %s:\n%s", localModeDoc, localMeshScript, b)
		}
	}
}

// shBlocks returns the bodies of the ```sh blocks in the section that
// starts with heading, up to the next "## " heading.
func shBlocks(t *testing.T, doc, heading string) []string {
	t.Helper()
	_, sec, ok := strings.Cut(doc, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("no section %q", heading)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	var blocks []string
	for {
		_, rest, ok := strings.Cut(sec, "```sh\n")
		if !ok {
			return blocks
		}
		body, after, ok := strings.Cut(rest, "```\n")
		if !ok {
			t.Fatalf("unterminated sh block in %q", heading)
		}
		blocks = append(blocks, body)
		sec = after
	}
}

// tailLogs returns the end of every log the script wrote.
func tailLogs(work string) string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(work, "*.log"))
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		fmt.Fprintf(&b, "--- %s\n%s\n", filepath.Base(l), strings.Join(lines, "\n"))
	}
	return b.String()
}

// TestTrellisRunOwnApp runs `trellis run --service docsapp=<app>` (the
// walkthrough as one command), sends a request through the client proxy
// it prints, and checks the app answered and the server proxy counted the
// request as mTLS from the client identity; then Ctrl-C (SIGINT) stops it
// cleanly and removes its work directory.
func TestTrellisRunOwnApp(t *testing.T) {
	requireBinaries(t)
	a := startApp(t, "run-app")
	p := harness.StartProcess(t, "trellis-run", t.TempDir(), bins.CLI, "run",
		"--service", "docsapp="+a.Addr, "--bin-dir", filepath.Dir(bins.Proxy))
	var m []string
	ready := regexp.MustCompile(`(?s)mesh ready \(work dir (\S+)\)\nclient proxy: (\S+)\nservice docsapp\.local:80 -> server proxy \S+ \(admin (\S+)\)`)
	err := eventually(60*time.Second, func() error {
		if p.Exited() {
			return nil
		}
		out, _ := os.ReadFile(p.LogPath)
		if m = ready.FindStringSubmatch(string(out)); m == nil {
			return fmt.Errorf("no usage printed yet")
		}
		return nil
	})
	if err != nil || m == nil {
		t.Fatalf("trellis run did not get ready: %v\n%s", err, p.LogTail(40))
	}
	workDir, outbound, admin := m[1], m[2], m[3]
	c := meshClient(outbound, 10*time.Second)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://docsapp.local/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Echo-Served-By") != "run-app" {
		t.Fatalf("GET docsapp.local via %s: %s, served by %q", outbound, resp.Status, resp.Header.Get("Echo-Served-By"))
	}
	scrapeAtLeast(t, "server proxy", admin, "trellis_requests_total", map[string]string{
		"direction": "inbound", "tls": "true", "peer_identity": "spiffe://cluster.local/ns/local/sa/client",
	}, 1, 5*time.Second)
	if err := p.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if exited, err := p.Wait(30 * time.Second); !exited || err != nil {
		t.Fatalf("after SIGINT: exited=%v err=%v\n%s", exited, err, p.LogTail(20))
	}
	if _, err := os.Stat(workDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there after the stop: %v", workDir, err)
	}
}
