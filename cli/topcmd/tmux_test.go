package topcmd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The test binary is also `trellis top` when this is set, so the tmux
// test runs the real command on a real terminal without building trellis.
const asTopEnv = "TRELLIS_TOPCMD_TEST_AS_TOP"

func TestMain(m *testing.M) {
	if os.Getenv(asTopEnv) == "1" {
		cmd := New(nil)
		cmd.SetArgs(os.Args[1:])
		if err := cmd.ExecuteContext(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, "error:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// tmux drives a private tmux server (its own socket) of one 100x30 pane.
type tmux struct {
	t      *testing.T
	socket string
}

func newTmux(t *testing.T) *tmux {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("tmux not installed (CI installs it)")
		}
		t.Fatal("tmux is required in CI:", err)
	}
	x := &tmux{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	x.run("-f", "/dev/null", "new-session", "-d", "-x", "100", "-y", "30", "-s", "top", "sh")
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", x.socket, "kill-server").Run() })
	return x
}

func (x *tmux) run(args ...string) string {
	x.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", x.socket}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func (x *tmux) send(keys ...string) { x.run(append([]string{"send-keys", "-t", "top"}, keys...)...) }

func (x *tmux) screen() string { return x.run("capture-pane", "-p", "-t", "top") }

// waitFor polls the pane until ok holds (ceiling 60 s; prints the time).
func (x *tmux) waitFor(what string, ok func(string) bool) string {
	x.t.Helper()
	start := time.Now()
	for {
		s := x.screen()
		if ok(s) {
			x.t.Logf("%s after %v", what, time.Since(start).Round(time.Millisecond))
			return s
		}
		if time.Since(start) > 60*time.Second {
			x.t.Fatalf("no %s after 60 s; screen:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// exited is the line the shell prints last, after the command's status
// and the terminal check (waiting for EXIT= alone raced the check's line).
// It is computed (DONE-$((1+1))), so the echoed command line, however
// wrapped, never shows it.
var exited = regexp.MustCompile(`(?m)^DONE-2$`)

// cleared is the line the shell prints once clear has run (computed, like
// exited, so the echoed command line never matches).
var cleared = regexp.MustCompile(`(?m)^CLEARED-4$`)

// TestLiveViewInTmux: on a real terminal the view draws the table in
// place, q and Ctrl-C quit with status 0, and the shell gets its screen and
// terminal settings (stty) back.
func TestLiveViewInTmux(t *testing.T) {
	x := newTmux(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	session := writeSession(t, 9)
	for _, quit := range []string{"q", "C-c"} {
		t.Run(quit, func(t *testing.T) {
			x.t = t
			// Typed before clear has run, the command's echo would be wiped
			// and its output land after the prompt. A fresh pane is already
			// near blank, so wait for a line only the shell computes after
			// clearing (never the echo of what was typed).
			x.send("clear; echo CLEARED-$((2+2))", "Enter")
			x.waitFor("a clear screen", cleared.MatchString)
			cmd := fmt.Sprintf("echo SHELL-SCREEN; S1=$(stty -g); %s=1 %s deploy/web -n demo --file %s --refresh 100ms; echo EXIT=$?; [ \"$S1\" = \"$(stty -g)\" ] && echo STTY-RESTORED; echo DONE-$((1+1))",
				asTopEnv, self, session)
			x.send(cmd, "Enter")
			s := x.waitFor("the table", func(s string) bool {
				return strings.Contains(s, "SOURCE") && strings.Contains(s, "tap ended: ok")
			})
			row := ""
			for _, l := range strings.Split(s, "\n") {
				if strings.Contains(l, "/books") {
					row = strings.Join(strings.Fields(l), " ")
				}
			}
			if row != "demo/web-1 books:80 GET /books 9 1.00ms 9.00ms 9.00ms 66.7%" {
				t.Errorf("/books row %q; screen:\n%s", row, s)
			}
			if strings.Contains(s, "SHELL-SCREEN") {
				t.Errorf("the view is not on the alternate screen:\n%s", s)
			}
			x.send(quit)
			s = x.waitFor("the shell back", exited.MatchString)
			for _, want := range []string{"\nEXIT=0\n", "\nSTTY-RESTORED\n", "\nSHELL-SCREEN\n"} {
				if !strings.Contains(s, want) {
					t.Errorf("after %s: no %s on the screen:\n%s", quit, want, s)
				}
			}
			if strings.Contains(s, "SOURCE") {
				t.Errorf("the view's table stayed on the shell's screen:\n%s", s)
			}
		})
	}
}
